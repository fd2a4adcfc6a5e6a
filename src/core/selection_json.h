// Selection <-> JSON, so that users can inspect, save and reuse what SampleAttention kept (CLI --selection).
// A small hand-written writer and reader: no third-party JSON library.
//
// Format (version 1):
//   {"format": "sampleattn.selection", "version": 1, "batch": B, "heads": H, "seq_q": Sq, "seq_k": Sk,
//    "causal": true, "dense_tail": 0, "density": 0.12, "min_sampled_coverage": 0.95,
//    "per_head": [{"batch": b, "head": h, "window": w, "kept_columns": n, "kept_entries": e,
//                  "visible_entries": t, "density": x, "sampled_coverage": c, "indices": [j0, j1, ...]}, ...]}
// per_head has B * H entries in (batch, head) order; indices are sorted ascending key positions.
#pragma once

#include <string>

#include "sampleattn/selection.h"

namespace sampleattn::io {

std::string selection_to_json(const Selection& selection);
void write_selection_json(const std::string& path, const Selection& selection);

// Parses and validates (Selection::validate); entry counts are recomputed from window and indices, the
// sampled coverage is taken from the file. Errors name `what` (the file) and the problem.
Selection selection_from_json(const std::string& text, const std::string& what);
Selection read_selection_json(const std::string& path);

}  // namespace sampleattn::io
