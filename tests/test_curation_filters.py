"""Curation decisions, pure (no Ray): dedupe + 8-gram decontamination, quality patterns, trace
failures, trusted rules, difficulty grading, domains by field, the store's atomic commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s1ray.curation import duplicates as D
from s1ray.curation import filters as F
from s1ray.curation import sources as S
from s1ray.curation import text as T
from s1ray.curation.config import CurationConfig, PatternConfig, default_patterns
from s1ray.curation.store import StageStore, fingerprint

from evaldata import DATA_DIR, eval_file

MATH500, AIME24 = DATA_DIR / "math500.jsonl", DATA_DIR / "aime24.jsonl"

ROOT = Path(__file__).resolve().parents[1]

LONG = ("A bag contains {a} red marbles and {b} blue marbles. Two marbles are drawn at random without "
        "replacement, and then a fair coin is tossed once for every red marble that was drawn. What is the "
        "probability that the number of heads equals the number of blue marbles drawn? Give the result as a "
        "reduced fraction.")


def _eval_questions(path: Path) -> list[str]:
    return [json.loads(line)["problem"] for line in path.read_text().splitlines() if line.strip()]


def pool_with_plants() -> tuple[list[dict], dict[str, str]]:
    """Distinct questions + planted duplicates and leaks; returns rows and {id: expected reason}."""
    math500 = _eval_questions(MATH500)
    aime = _eval_questions(AIME24)
    rng = np.random.default_rng(7)
    vocab = [w for w in LONG.replace("?", " ").replace(".", " ").split() if w.isalpha()] + [f"v{i}" for i in range(300)]
    rows = [{"id": f"orig-{i:02d}", "source": "pool", "question": " ".join(rng.choice(vocab, 45)) + "?"}
            for i in range(20)]
    rows.append({"id": "orig-long", "source": "pool", "question": LONG.format(a=3, b=3)})
    rows += [{"id": f"mod-{i}", "source": "pool", "question": f"Compute ({i} + {i + 3} + {2 * i}) mod {7 + i}."}
             for i in range(10)]
    expect = {}
    # exact duplicates: case and whitespace differ
    rows.append({"id": "p-dup-exact-1", "source": "pool", "question": "  " + LONG.format(a=3, b=3).upper()})
    rows.append({"id": "p-dup-exact-2", "source": "pool", "question": "Compute (2 + 5 + 4)  mod 9 ."})
    expect["p-dup-exact-1"] = expect["p-dup-exact-2"] = "exact_duplicate"
    # near duplicate: one word changed in a long question
    rows.append({"id": "p-dup-near-1", "source": "pool",
                 "question": rows[5]["question"].replace(" ", " however ", 1)})
    expect["p-dup-near-1"] = "near_duplicate"
    # leaks: a MATH500 question copied verbatim, an AIME24 one embedded in a longer prompt
    long_m = next(q for q in math500 if len(T.words(q)) > 20)
    rows.append({"id": "p-leak-math500", "source": "pool", "question": long_m})
    rows.append({"id": "p-leak-aime24", "source": "pool", "question": "Solve this competition problem. " + aime[3][:400]})
    expect["p-leak-math500"] = "contaminated:math500"
    expect["p-leak-aime24"] = "contaminated:aime24"
    # a short MATH500 question (fewer than 8 words): matched exactly
    short_m = next(q for q in math500 if 0 < len(T.words(q)) < 8)
    rows.append({"id": "p-leak-short", "source": "pool", "question": short_m})
    expect["p-leak-short"] = "contaminated:math500"
    return rows, expect


def featurize(rows: list[dict], index: F.EvalIndex | None, num_perm: int = 128, k: int = 3) -> list[dict]:
    h = T.MinHasher(num_perm, 0)
    out = []
    for r in rows:
        hit = index.match(r["question"]) if index else None
        out.append({**r, "ingest_source": "pool", "exact_key": T.exact_key(r["question"]),
                    "minhash": h.of_text(r["question"], k).tobytes(),
                    "contaminated": hit[0] if hit else None, "contam_detail": hit[1] if hit else None})
    return out


@pytest.fixture(scope="module")
def eval_index():
    math500, aime24 = eval_file("math500"), eval_file("aime24")
    return F.EvalIndex({"math500": _eval_questions(math500), "aime24": _eval_questions(aime24)}, n=8,
                       boilerplate_df=5)


def test_dedupe_and_decontam_remove_exactly_the_plants(eval_index):
    rows, expect = pool_with_plants()
    dec = D.dedupe_decisions(featurize(rows, eval_index), bands=16, threshold=0.8)
    assert {k: v[0] for k, v in dec.items()} == expect
    # the kept copy is the original (id order), named in the detail
    assert dec["p-dup-exact-1"][1] == "of orig-long"
    assert dec["p-dup-near-1"][1].startswith("of orig-05")


def test_no_contamination_false_positives_on_a_synthetic_pool(eval_index):
    from s1ray.miniature.problems import make_pool

    qs = [p.question for p in make_pool(300, 1)] + [LONG.format(a=a, b=9) for a in range(20)]
    assert [q for q in qs if eval_index.match(q)] == []


def test_boilerplate_ngrams_are_not_leaks_unless_asked(eval_index):
    # AIME's stock phrase is in many eval questions: an instruction, not a leak
    q = "Frogs sleep where m and n are relatively prime positive integers today."
    assert "where m and n are relatively prime positive" in eval_index.boilerplate
    assert eval_index.match(q) is None
    plain = F.EvalIndex({"math500": _eval_questions(MATH500), "aime24": _eval_questions(AIME24)}, n=8,
                        boilerplate_df=0)  # s1's rule: any shared 8-gram
    assert plain.match(q) is not None


def test_every_math500_and_aime24_question_is_caught(eval_index):
    for q in _eval_questions(MATH500) + _eval_questions(AIME24):
        if T.words(q):
            assert eval_index.match(q), q


def test_dedupe_keeps_trusted_then_source_order_and_never_chains():
    # the trusted source's copy survives, whatever the ids say
    a = {"id": "a", "source": "numina", "question": "What is 2+2?"}
    b = {"id": "b", "source": "aime", "question": "what is 2 + 2?"}
    dec = D.dedupe_decisions(featurize([a, b], None), trusted=["aime"])
    assert dec == {"a": ("exact_duplicate", "of b")}
    # greedy near-dedupe: A~B and B~C but A !~ C -> only B goes (a union-find would drop C too)
    h = T.MinHasher(256, 0)
    sets = {"A": range(0, 100), "B": range(20, 120), "C": range(40, 140)}  # J(A,B)=J(B,C)=0.67, J(A,C)=0.43
    rows = [{"id": k, "source": "s", "ingest_source": "s", "exact_key": k, "contaminated": None,
             "minhash": h.signature({f"s{i}" for i in v}).tobytes()} for k, v in sets.items()]
    dec = D.dedupe_decisions(rows, bands=64, threshold=0.55)
    assert set(dec) == {"B"}


def test_dedupe_decisions_equal_the_driver_side_version_it_replaced():
    """The graph version (exact groups, band buckets, edges, components) decides as the greedy
    single pass over LSH buckets of kept rows did (bench/_dedupe_before.py), detail included,
    on a pool of chains, exact copies of near copies, trusted sources and two source orders."""
    from bench_modules import load_bench

    before = load_bench("_dedupe_before")
    rng = np.random.default_rng(11)
    h = T.MinHasher(64, 0)
    rows = []
    for g in range(60):
        base = [f"v{i}" for i in rng.choice(3000, 30)]
        for k in range(int(rng.integers(1, 6))):
            q = " ".join(base[k:] + [f"x{g}_{k}_{j}" for j in range(k)])
            for copy in range(1 + (k == 1)):
                rows.append({"id": f"g{g:02d}-{k}-{copy}", "source": "aime" if g % 7 == 0 and k == 2 else "pool",
                             "ingest_source": ["a", "b"][(g + k) % 2], "question": q.upper() if copy else q,
                             "contaminated": "math500" if g == 5 and k == 0 else None})
    feats = [{**r, "exact_key": T.exact_key(r["question"]), "minhash": h.of_text(r["question"], 3).tobytes()}
             for r in rows]
    for kw in ({"bands": 16, "threshold": 0.6}, {"bands": 32, "threshold": 0.8}, {"bands": 8, "threshold": 0.5, "exact": False}):
        args = {**kw, "source_order": {"b": 0, "a": 1}, "trusted": ["aime"]}
        want = before.driver_dedupe(feats, **args)
        assert {v[0] for v in want.values()} >= {"near_duplicate", "contaminated:math500"}
        assert D.dedupe_decisions(feats, **args) == want


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(400)]
    h = T.MinHasher(256, 1)
    errs = []
    for _ in range(30):
        a = set(rng.choice(vocab, 120, replace=False))
        b = set(list(a)[:80]) | set(rng.choice(vocab, 40, replace=False))
        errs.append(abs(T.estimated_jaccard(h.signature(a), h.signature(b)) - T.jaccard(a, b)))
    assert np.mean(errs) < 0.04 and max(errs) < 0.12
    assert (h.signature({"x"}) == T.MinHasher(256, 1).signature({"x"})).all()  # stable across instances


def test_exact_key_normalisation():
    assert T.exact_key("Compute 3 + 5 .") == T.exact_key("compute   3+5.")
    assert T.exact_key("3 + 5") != T.exact_key("3 - 5")


# ------------------------------------------------------------------------------- quality
PLANTS = {
    "ascii_art": ["Look at the grid:\n+---+---+\n| a | b |\n+---+---+\nHow many paths are there?",
                  "The figure:\n┌───┐\n│ x │\n└───┘ What is x?"],
    "missing_image": ["As shown in the figure, triangle ABC is isosceles. Find angle A.",
                      "See Figure 2 for the setup. Compute the area.",
                      "![diagram](img/q12.png) Find the length of AB."],
    "inconsistent_numbering": ["12. Find all real x with x^2 = 4.",
                               "Answer the questions.\n1. Find x.\n2. Find y.\n4. Find z."],
}
CLEAN = ["Find all real x with x^2 = 4.", "Let $f(x) = 3x + 1$. Compute $f(f(2))$.",
         "Answer both.\n1. Find x.\n2. Find y.\nThen:\n1. Find z.",
         "[asy] draw((0,0)--(1,1)); [/asy] In the figure, find the slope of the segment.",
         "The value is 3.5 and the area 12.25; find the ratio 2:3 of the sides.",
         "Let a - b = 3 and a + b = 5. Find a*b."]


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_each_default_pattern_flags_its_plants(name):
    pats = F.compile_patterns(p.model_dump() for p in default_patterns())
    for text in PLANTS[name]:
        assert F.pattern_reason({"question": text}, pats) == (f"quality:{name}", "question"), text


def test_clean_questions_pass_the_default_patterns():
    pats = F.compile_patterns(p.model_dump() for p in default_patterns())
    for text in CLEAN:
        assert F.pattern_reason({"question": text}, pats) is None, text


def test_custom_pattern_fields_and_unless():
    pats = F.compile_patterns([{"name": "todo", "pattern": r"\bTODO\b", "fields": ["thinking"], "unless": "ignore-me",
                                "ignore_case": False}])
    assert F.pattern_reason({"question": "TODO", "thinking": "ok"}, pats) is None  # question not checked
    assert F.pattern_reason({"thinking": "step TODO"}, pats) == ("quality:todo", "thinking")
    assert F.pattern_reason({"thinking": "step TODO ignore-me"}, pats) is None
    assert F.pattern_reason({"thinking": "step todo"}, pats) is None


def test_bad_regex_is_a_config_error_naming_the_pattern():
    with pytest.raises(ValueError, match="bad.*not a valid regex"):
        PatternConfig(name="bad", pattern="(unclosed")


def test_trace_failures_and_best_sample():
    ok = {"thinking": "t", "attempt": "a", "error": None, "finish_reason": "stop"}
    assert F.trace_failure(ok) is None
    assert F.trace_failure({**ok, "error": "HTTP 500"}) == "trace_error"
    assert F.trace_failure({**ok, "thinking": "  "}) == "empty_thinking"
    assert F.trace_failure({**ok, "attempt": ""}) == "empty_attempt"
    assert F.trace_failure({**ok, "finish_reason": "length"}) == "truncated"
    assert F.trace_failure({**ok, "finish_reason": "length"}, drop_truncated=False) is None
    samples = [{"failure": "trace_error", "pattern": None, "input_index": 0, "sample_index": 0},
               {"failure": None, "pattern": "quality:ascii_art", "input_index": 0, "sample_index": 1},
               {"failure": None, "pattern": None, "input_index": 0, "sample_index": 2}]
    assert F.best_trace(samples)["sample_index"] == 2
    assert F.best_trace(samples[:2])["sample_index"] == 1
    assert F.best_trace([]) is None


def test_trusted_rules_follow_s1():
    rules = [{"source": "aime*", "require_correct": True, "min_thinking_tokens": 0},
             {"source": "math", "require_correct": True, "min_thinking_tokens": 5600}]
    assert F.trusted_rule_matches("aime_1983", rules, True, 10)
    assert not F.trusted_rule_matches("aime_1983", rules, False, 10)  # teacher wrong
    assert F.trusted_rule_matches("math", rules, True, 6000)
    assert not F.trusted_rule_matches("math", rules, True, 5000)  # trace too short
    assert not F.trusted_rule_matches("numina", rules, True, 9999)


# ------------------------------------------------------------------------------- difficulty
def test_difficulty_drops_exactly_what_a_scripted_solver_got_right():
    from s1ray.answers import is_equivalent

    refs = {f"q{i}": str(i * 7) for i in range(12)}
    refs["q-none"] = None
    # solver A: right on q0..q3 (in various spellings), wrong elsewhere; solver B: right on q10, one error
    answers = {"q0": "0", "q1": "7.0", "q2": "\\boxed{14}", "q3": "21", "q4": "29", "q5": None}
    graded = []
    for qid, ref in refs.items():
        if ref is None:
            continue
        pred = answers.get(qid, "-1")
        for s in range(2):
            graded.append({"id": qid, "solver": "A", "correct": bool(pred and is_equivalent(pred, ref) and s == 0)})
    graded.append({"id": "q10", "solver": "B", "correct": True})
    graded.append({"id": "q11", "solver": "B", "correct": None})  # errored: not a sample
    graded.extend({"id": q, "solver": "B", "correct": False} for q in refs if q not in ("q10", "q11", "q-none"))
    stats = F.aggregate_grades(graded)
    assert stats["q1"]["A"] == {"samples": 2, "correct": 1}
    reasons = {q: F.difficulty_reason(stats.get(q, {}), ["A", "B"], has_reference=refs[q] is not None)
               for q in refs}
    dropped = {q: r[0] for q, r in reasons.items() if r}
    assert dropped == {"q0": "solved:A", "q1": "solved:A", "q2": "solved:A", "q3": "solved:A",
                       "q10": "solved:B", "q11": "no_solver_output:B"}
    # knobs: keep unknown difficulty; drop questions without a reference; trusted never dropped
    assert F.difficulty_reason(stats["q11"], ["A", "B"], has_reference=True, on_missing="keep") is None
    assert F.difficulty_reason({}, ["A"], has_reference=False, on_no_reference="drop")[0] == "no_reference"
    assert F.difficulty_reason(stats["q0"], ["A", "B"], has_reference=True, trusted=True) is None


# ------------------------------------------------------------------------------- sources / domains
def test_question_rows_ids_are_stable_and_errors_are_rows():
    recs = [{"problem": "What is 1+1?", "answer": 2, "level": 3}, {"problem": "", "id": "bad"},
            {"problem": "Find x.", "solution": "So $x = \\boxed{5}$."}]
    src = {"name": "s", "fields": {"question": "problem"}, "id_prefix": "p/", "answer_from_solution": True}
    a, b = S.question_rows(recs, src), S.question_rows(recs, src)
    assert a == b and a[0]["id"].startswith("p/q-") and a[0]["answer"] == "2"
    assert json.loads(a[0]["metadata"]) == {"level": 3}
    assert a[1]["reason"] == "schema_error" and a[1]["id"] == "p/bad"
    assert a[2]["answer"] == "5"


def test_record_filter_and_trace_rows():
    assert S.record_matches({"Year": 2020}, {"Year": {"le": 2021}})
    assert not S.record_matches({"Year": 2022}, {"Year": {"le": 2021}})
    assert not S.record_matches({"Year": None}, {"Year": {"le": 2021}})
    t = S.trace_row({"question": "Q?", "thinking_trajectories": ["think"], "attempt": "A"})
    from s1ray.data.schema import question_id

    assert t["id"] == question_id("Q?") and t["thinking"] == "think" and t["sample_index"] == 0
    t = S.trace_row({"id": "x", "sample_index": 2, "thinking": "t", "answer": "att", "thinking_tokens": 7})
    assert (t["attempt"], t["thinking_tokens"], t["sample_index"]) == ("att", 7, 2)


def test_field_domains():
    from s1ray.curation.domains import FieldClassifier

    rows = [{"source": "affine3", "metadata": json.dumps({"subject": "Algebra"})}, {"source": "", "metadata": "{}"}]
    assert FieldClassifier("source").classify(rows) == ["affine3", "unclassified"]
    assert FieldClassifier("metadata.subject").classify(rows) == ["Algebra", "unclassified"]


def test_msc_labels_and_domain_code_parsing():
    from s1ray.curation.domains import load_msc, msc_labels
    from s1ray.curation.llm import parse_domain_code, parse_judge

    from s1ray.curation.config import DomainsConfig
    from s1ray.curation.domains import domain_labels

    # s1ray's own list: MSC2020's 63 top-level classes; the default leaves out 00 and 01 as s1 did.
    full = load_msc()
    assert len(full) == 63 and len({d["code"] for d in full}) == 63
    assert {d["code"]: d["title"] for d in full}["91"].startswith("Game theory, economics, finance")
    labels = domain_labels(DomainsConfig(method="embedding").model_dump())
    assert len(labels) == 61 and labels[0] == ("03 Mathematical logic and foundations",
                                               "Mathematical logic and foundations")
    msc = load_msc(exclude=["00", "01"])
    assert msc_labels(msc) == labels
    with pytest.raises(ValueError, match="domains.msc_path: .*nowhere.json.* does not exist"):
        load_msc("/nowhere.json")
    codes = [d["code"] for d in msc]
    assert parse_domain_code("Code: 11", codes) == "11"
    assert parse_domain_code("I think **Code: 60** (probability); not 99", codes) == "60"
    assert parse_domain_code("no idea", codes) is None
    assert parse_judge("Yes.") is True and parse_judge("No, the attempt says 5") is False
    assert parse_judge("maybe") is None


# ------------------------------------------------------------------------------- store / config
def test_store_commit_is_atomic_and_fingerprinted(tmp_path):
    st = StageStore(tmp_path)
    tmp = st.begin("dedupe")
    (tmp / "kept").mkdir()
    (tmp / "kept" / "part-00000.parquet").write_text("x")
    assert st.marker("dedupe") is None and not st.dir("dedupe").exists()
    fp = fingerprint({"a": 1})
    st.commit("dedupe", tmp, fp, {"rows_in": 1})
    assert st.is_done("dedupe", fp) and not st.is_done("dedupe", fingerprint({"a": 2}))
    assert not tmp.exists() and (st.kept("dedupe") / "part-00000.parquet").exists()
    # a crashed run's temp dir is cleaned, the committed stage stays
    crashed = st.begin("dedupe")
    st.clean_temp()
    assert not crashed.exists() and st.is_done("dedupe", fp)
    # recommit replaces the old output
    tmp2 = st.begin("dedupe")
    st.commit("dedupe", tmp2, fingerprint({"a": 2}), {})
    assert not (st.kept("dedupe")).exists()
    assert st.dir("export") == tmp_path / "dataset"


def test_config_errors_name_fields():
    from s1ray.config import ConfigError, load_config

    base = ROOT / "configs" / "curation" / "miniature.yaml"
    with pytest.raises(ConfigError, match="force"):
        load_config(CurationConfig, base, ["force=[nope]"])
    with pytest.raises(ConfigError, match="num_perm"):
        load_config(CurationConfig, base, ["dedupe.num_perm=100", "dedupe.bands=16"])
    with pytest.raises(ConfigError, match="api_key_env"):
        load_config(CurationConfig, base, ["difficulty.judge={base_url: 'http://x', model: m, api_key_env: 'sk-123 4'}"])
    with pytest.raises(ConfigError, match="selection.method"):
        load_config(CurationConfig, base, ["selection.method=best"])
    cfg = load_config(CurationConfig, base, ["until=dedupe", "quality.traces=[]"])
    assert cfg.until == "dedupe"


def test_miniature_heldout_eval_set_and_optional_sets(tmp_path, monkeypatch):
    """The miniature decontaminates against its own held-out problems (short questions: matched
    by exact text); an optional set is used where S1RAY_DATA_DIR has it and skipped, saying why,
    where it does not; a required set nobody supplies names its field."""
    from s1ray.config import ConfigError
    from s1ray.curation.config import DecontamConfig
    from s1ray.curation.evalsets import resolve_eval_sets
    from s1ray.miniature.problems import heldout_problems, make_pool

    (tmp_path / "aime24.jsonl").write_text(json.dumps({"id": "a", "problem": "An AIME problem " * 3}) + "\n")
    monkeypatch.setenv("S1RAY_DATA_DIR", str(tmp_path))
    cfg = DecontamConfig(eval_sets=[{"name": "heldout", "kind": "miniature_heldout"},
                                    {"name": "math500", "optional": True}, {"name": "aime24", "optional": True}])
    sets = resolve_eval_sets(cfg)
    assert sets.used == {"heldout": "the miniature's held-out problems", "aime24": str(tmp_path / "aime24.jsonl")}
    assert sets.skipped == {"math500": "optional, no local copy in S1RAY_DATA_DIR"}
    index = F.EvalIndex(sets.questions, 8)
    held = heldout_problems()[5].question
    assert index.match(held)[0] == "heldout"
    assert not any(index.match(p.question) for p in make_pool(200))
    monkeypatch.delenv("S1RAY_DATA_DIR")
    with pytest.raises(ConfigError, match=r"^decontamination.eval_sets\[0\]: 'mine' is not a known eval set"):
        resolve_eval_sets(DecontamConfig(eval_sets=[{"name": "mine", "hf_name": None, "path": None}]))
