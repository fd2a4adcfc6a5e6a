// Fills the dense part of AttentionParams from a validated problem and its views (attention.h).
#include "cuda/attention.h"

namespace sampleattn::cuda {

AttentionParams attention_params(const core::Problem& p, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, float* lse) {
  AttentionParams ap;
  ap.q = q.data;
  ap.k = k.data;
  ap.v = v.data;
  ap.out = out.data;
  ap.lse = lse;
  for (int i = 0; i < 4; ++i) {
    ap.q_stride[i] = q.stride[i];
    ap.k_stride[i] = k.stride[i];
    ap.v_stride[i] = v.stride[i];
    ap.out_stride[i] = out.stride[i];
  }
  ap.batch = p.batch;
  ap.seq_q = p.seq_q;
  ap.seq_k = p.seq_k;
  ap.q_heads = p.q_heads;
  ap.kv_heads = p.kv_heads;
  ap.head_dim = p.head_dim;
  ap.dtype = q.dtype;
  ap.scale = p.scale;
  ap.causal = p.causal;
  return ap;
}

}  // namespace sampleattn::cuda
