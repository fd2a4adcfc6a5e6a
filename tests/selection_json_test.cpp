// Selection JSON (src/core/selection_json.h): random selections survive a write / read round trip exactly
// (windows, CSR, stats), real selections from select() too, and malformed or inconsistent files throw
// sampleattn::Error naming the file and the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/selection_json.h"
#include "sampleattn/api.h"
#include "sampleattn/error.h"
#include "support/host_tensor.h"

namespace sampleattn {
namespace {

void expect_same(const Selection& a, const Selection& b) {
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.heads, b.heads);
  EXPECT_EQ(a.seq_q, b.seq_q);
  EXPECT_EQ(a.seq_k, b.seq_k);
  EXPECT_EQ(a.causal, b.causal);
  EXPECT_EQ(a.dense_tail, b.dense_tail);
  EXPECT_EQ(a.window, b.window);
  EXPECT_EQ(a.offsets, b.offsets);
  EXPECT_EQ(a.indices, b.indices);
  ASSERT_EQ(a.stats.size(), b.stats.size());
  for (std::size_t i = 0; i < a.stats.size(); ++i) {
    EXPECT_EQ(a.stats[i].kept_columns, b.stats[i].kept_columns);
    EXPECT_EQ(a.stats[i].kept_entries, b.stats[i].kept_entries);
    EXPECT_EQ(a.stats[i].visible_entries, b.stats[i].visible_entries);
    EXPECT_EQ(a.stats[i].density, b.stats[i].density);
    EXPECT_EQ(a.stats[i].sampled_coverage, b.stats[i].sampled_coverage);
  }
}

std::string error_of(const std::string& text) {
  try {
    io::selection_from_json(text, "sel.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SelectionJson, RandomSelectionsRoundTripExactly) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t shapes[][4] = {{1, 1, 1, 1}, {2, 3, 17, 97}, {1, 8, 1025, 1025}, {3, 2, 5, 4097}};
  for (const auto& s : shapes) {
    for (bool causal : {true, false}) {
      Selection sel = test::random_selection(rng, s[0], s[1], s[2], s[3], causal, 1 + rng() % 50, rng() % (s[3] + 1),
                                             rng() % 3);
      std::uniform_real_distribution<double> cov(0.9, 1.0);
      for (HeadStats& st : sel.stats) st.sampled_coverage = cov(rng);  // awkward doubles must survive exactly
      expect_same(io::selection_from_json(io::selection_to_json(sel), "mem"), sel);
    }
  }
}

TEST(SelectionJson, SelectOutputRoundTripsThroughAFile) {
  std::mt19937_64 rng(test::test_seed());
  test::HostTensor q(DType::f32, 2, 50, 4, 64), k(DType::f32, 2, 80, 2, 64);
  q.fill_random(rng);
  k.fill_random(rng);
  const Selection sel = select(q.view(), k.view(), {}, {}, {Backend::cpu_reference});
  const std::string path =
      (std::filesystem::temp_directory_path() / ("sampleattn_sel_" + std::to_string(::getpid()) + ".json")).string();
  io::write_selection_json(path, sel);
  const Selection back = io::read_selection_json(path);
  std::filesystem::remove(path);
  expect_same(back, sel);
  EXPECT_DOUBLE_EQ(back.density(), sel.density());
}

TEST(SelectionJson, HandWrittenFileWithEscapesAndSpacing) {
  const std::string text = R"(  {"version": 1, "format": "sampleattn.selection", "note": "caf\u00e9 \"x\"\n",
    "batch": 1, "heads": 1, "seq_q": 4, "seq_k": 6, "causal": true, "dense_tail": 0,
    "per_head": [ {"batch": 0, "head": 0, "window": 2, "indices": [0, 3], "sampled_coverage": null} ] } )";
  const Selection s = io::selection_from_json(text, "hand.json");
  EXPECT_EQ(s.window, std::vector<std::int64_t>{2});
  EXPECT_EQ(s.indices, (std::vector<std::int32_t>{0, 3}));
  EXPECT_EQ(s.stats[0].kept_columns, 2);
  EXPECT_GT(s.stats[0].kept_entries, 0);  // recomputed, not read
  EXPECT_TRUE(std::isnan(s.stats[0].sampled_coverage));  // null: not known
  EXPECT_TRUE(std::isnan(s.min_sampled_coverage()));
}

TEST(SelectionJson, CoverageOutsideTheUnitIntervalIsAnError) {
  for (const char* cov : {"-1e308", "1.5", "-0.001"}) {
    const std::string text = std::string(R"({"version": 1, "format": "sampleattn.selection", "batch": 1, "heads": 1,
      "seq_q": 4, "seq_k": 6, "causal": true, "dense_tail": 0,
      "per_head": [ {"batch": 0, "head": 0, "window": 2, "indices": [0, 3], "sampled_coverage": )") + cov + "} ] }";
    EXPECT_NE(error_of(text).find("per_head[0].sampled_coverage"), std::string::npos) << cov << ": " << error_of(text);
  }
}

// Every proper prefix of a valid file is an error, never a crash or a partial selection.
TEST(SelectionJson, EveryTruncationIsAnError) {
  std::mt19937_64 rng(test::test_seed());
  const std::string text = io::selection_to_json(test::random_selection(rng, 1, 2, 9, 20, true, 3, 5));
  for (std::size_t n = 0; n + 1 < text.size(); ++n) {
    const std::string prefix = text.substr(0, n);
    if (prefix.find_last_not_of(" \n") != std::string::npos && prefix[prefix.find_last_not_of(" \n")] == '}' &&
        n + 3 >= text.size()) {
      continue;  // only whitespace was cut
    }
    EXPECT_THROW(io::selection_from_json(prefix, "cut.json"), Error) << "prefix of " << n << " bytes";
  }
}

TEST(SelectionJson, MalformedFilesThrowNamingTheProblem) {
  const std::string head =
      R"({"format": "sampleattn.selection", "version": 1, "batch": 1, "heads": 2, "seq_q": 4, "seq_k": 6, "causal": true, "dense_tail": 0, "per_head": )";
  const std::string ok0 = R"({"batch": 0, "head": 0, "window": 2, "indices": [1, 2]})";
  const std::string ok1 = R"({"batch": 0, "head": 1, "window": 3, "indices": []})";
  const std::string good = head + "[" + ok0 + ", " + ok1 + "]}";
  EXPECT_EQ(error_of(good), "(no error)");
  struct Bad {
    std::string text, expected;
  };
  const std::vector<Bad> cases = {
      {"", "sel.json: invalid JSON at line 1 (byte 0): unexpected character 'end of input'"},
      {good.substr(0, good.size() - 5), "sel.json: invalid JSON"},
      {good + " x", "unexpected text after the JSON value"},
      {head + "[" + ok0 + ", " + ok1 + ",]}", "unexpected character ']'"},
      {"{\"a\": 1e999999}", "malformed number"},
      {"[1, 2]", "sel.json: the top level must be a JSON object"},
      {R"({"format": "other", "version": 1})", "sel.json: \"format\" must be \"sampleattn.selection\""},
      {R"({"format": "sampleattn.selection", "version": 2})", "unsupported selection version 2 (expected 1)"},
      {R"({"format": "sampleattn.selection", "version": 1, "batch": 1})", "sel.json: the top level has no \"heads\""},
      {R"({"format": "sampleattn.selection", "version": 1.5})", "version must be an integer"},
      {head + "[" + ok0 + "]}", "\"per_head\" must be an array of batch * heads = 2 entries"},
      {head + "[" + ok1 + ", " + ok0 + "]}", "per_head[0] is (batch 0, head 1), expected (batch 0, head 0)"},
      {head + R"([{"batch": 0, "head": 0, "window": 2, "indices": [2, 1]}, )" + ok1 + "]}",
       "selection.indices of head 0 must be sorted, unique and in [0, 6); found 1 after 2"},
      {head + R"([{"batch": 0, "head": 0, "window": 2, "indices": [7]}, )" + ok1 + "]}",
       "per_head[0].indices must hold integers in [0, seq_k = 6)"},
      {head + R"([{"batch": 0, "head": 0, "window": 2, "indices": [1.5]}, )" + ok1 + "]}",
       "per_head[0].indices must hold integers"},
      {head + R"([{"batch": 0, "head": 0, "window": 0, "indices": []}, )" + ok1 + "]}",
       "selection.window[0] (0) must be >= 1"},
      {head + R"([{"batch": 0, "head": 0, "indices": []}, )" + ok1 + "]}", "per_head[0] has no \"window\""},
      {R"({"format": "sampleattn.selection", "version": 1, "batch": 1, "heads": 1, "seq_q": 9, "seq_k": 6, "causal": true, "dense_tail": 0, "per_head": [{"batch": 0, "head": 0, "window": 1, "indices": []}]})",
       "selection.seq_q (9) must be <= selection.seq_k (6)"},
      {R"({"format": "sampleattn.selection", "version": 1, "batch": 4000000000, "heads": 4000000000, "seq_q": 1, "seq_k": 1, "causal": true, "dense_tail": 0})",
       "batch (4000000000) and heads (4000000000) must be > 0 and not absurdly large"},
      {std::string(100, '['), "nesting deeper than 64 levels"},
  };
  for (const Bad& c : cases) {
    const std::string msg = error_of(c.text);
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "text: " << c.text.substr(0, 200) << "\n  got:      " << msg
                                                       << "\n  expected: " << c.expected;
  }
  try {
    io::read_selection_json("/nonexistent/sel.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/sel.json: cannot open: no such file");
  }
}

}  // namespace
}  // namespace sampleattn
