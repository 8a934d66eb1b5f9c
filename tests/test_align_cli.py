"""groundroll align / aer command lines."""

from __future__ import annotations

import pytest

from groundroll.alignment.cli import main

import test_align_api_models as models


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    bundle = models.marian()
    folder = tmp_path_factory.mktemp("tiny-marian")
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture()
def corpus(tmp_path):
    pairs = models.held_out(3)
    src = [pairs[0].src, "", pairs[1].src, pairs[2].src]
    tgt = [pairs[0].tgt, pairs[1].tgt, pairs[1].tgt, ""]
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s in src))
    (tmp_path / "tgt.txt").write_text("".join(t + "\n" for t in tgt))
    return tmp_path, pairs


def test_align_writes_one_line_per_input_line(model_dir, corpus, capsys):
    d, pairs = corpus
    out = d / "out.txt"
    argv = ["align", "--model", model_dir, "--src", str(d / "src.txt"), "--tgt",
            str(d / "tgt.txt"), "--out", str(out), "--batch-size", "2"]
    assert main(argv) == 0
    lines = out.read_text().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 4
    assert lines[1] == "" and lines[3] == ""          # empty source, empty target
    assert len(lines[0].split()) == len(pairs[0].tgt_words)   # argmax: one per target word
    # Existing output: refused without --force, file untouched.
    before = out.read_text()
    assert main(argv + ["--method", "rollout"]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == before
    assert main(argv + ["--method", "rollout", "--no-shift", "--symmetrize", "union",
                        "--force", "--quiet"]) == 0
    assert len(out.read_text().split("\n")) - 1 == 4


def test_align_translates_without_tgt(model_dir, corpus):
    d, _ = corpus
    out = d / "gen.txt"
    assert main(["align", "--model", model_dir, "--src", str(d / "src.txt"), "--out",
                 str(out), "--quiet", "--layers", "1"]) == 0
    lines = out.read_text().split("\n")[:-1]
    assert len(lines) == 4 and lines[1] == ""


def test_mismatched_line_counts(model_dir, corpus, capsys):
    d, _ = corpus
    (d / "short.txt").write_text("a b\n")
    out = d / "never.txt"
    code = main(["align", "--model", model_dir, "--src", str(d / "src.txt"), "--tgt",
                 str(d / "short.txt"), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "4 lines" in err and "1" in err
    assert not out.exists() and list(d.glob(".never*")) == []


def test_bad_options_exit_2(capsys):
    assert main(["align", "--src", "x"]) == 2          # --out missing
    assert main(["align", "--src", "x", "--out", "y", "--method", "nope"]) == 2


def test_aer_hand_worked(tmp_path, capsys):
    # Gold (talp, 1-indexed): sure {0-0, 1-1}, possible {1-2}; prediction {0-0, 1-2, 2-2}.
    # |A|=3 |S|=2 |A∩S|=1 |A∩P|=2: P=2/3, R=1/2, AER = 1 - (1+2)/(3+2) = 0.4.
    (tmp_path / "gold.talp").write_text("1-1 2-2 2p3\n\n")
    (tmp_path / "pred.txt").write_text("0-0 1-2 2-2\n\n")
    assert main(["aer", "--gold", str(tmp_path / "gold.talp"), "--pred",
                 str(tmp_path / "pred.txt")]) == 0
    out = capsys.readouterr().out
    assert "AER       0.4000" in out
    assert "precision 0.6667" in out and "recall    0.5000" in out
    assert "F1        0.5714" in out
    (tmp_path / "short.txt").write_text("0-0\n")
    assert main(["aer", "--gold", str(tmp_path / "gold.talp"), "--pred",
                 str(tmp_path / "short.txt")]) == 2


def test_line_separators_inside_a_sentence_keep_the_line_count(model_dir, corpus):
    # U+2028, U+0085 and form feeds are not line ends of a one-sentence-per-line file
    d, pairs = corpus
    words = pairs[0].src.split()
    odd = [" ".join(words[:1]) + "\u2028" + " ".join(words[1:]),
           pairs[1].src + "\x85", pairs[2].src.replace(" ", "\x0c", 1)]
    (d / "odd.txt").write_text("".join(s + "\n" for s in odd), encoding="utf-8")
    out = d / "odd_out.txt"
    assert main(["align", "--model", model_dir, "--src", str(d / "odd.txt"), "--out",
                 str(out), "--quiet", "--layers", "1"]) == 0
    assert len(out.read_text().split("\n")) - 1 == 3


def test_words_past_the_model_limit_get_no_links():
    import warnings

    import groundroll as gr
    from groundroll.zoo import cached

    bundle = cached("bundled:toy-mt")
    src = "su tuga vefin na kilo"
    tgt = " ".join(["the", "dog", "sees", "a", "cat"] * 600)         # 3000 words
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = gr.align(src, tgt, model=bundle)
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and "get no links" in str(truncation[0].message)
    limit = int(bundle.model.config.max_position_embeddings)
    # Every target word keeps at most one token, plus the end-of-sentence token.
    assert a.links and max(t for _, t in a.links) < limit
    assert a.matrix.shape == (3000, 5)
    unscored = ~a.matrix.any(axis=1)
    assert unscored[limit:].all()
    assert not any(unscored[t] for _, t in a.links)
    for extraction, symmetrize in [("threshold", None), ("itermax", None),
                                   ("argmax", "grow-diag-final")]:
        links = gr.extract_links(a.matrix, extraction=extraction, symmetrize=symmetrize)
        assert links and not any(unscored[t] for _, t in links)


def test_cli_max_length_cut_words_are_unlinked(tmp_path):
    (tmp_path / "src.txt").write_text("su tuga vefin\n")
    (tmp_path / "tgt.txt").write_text(" ".join(["a"] * 40) + "\n")
    out = tmp_path / "out.txt"
    assert main(["align", "--src", str(tmp_path / "src.txt"), "--tgt",
                 str(tmp_path / "tgt.txt"), "--out", str(out), "--max-length", "8",
                 "--quiet"]) == 0
    links = [tuple(map(int, x.split("-"))) for x in out.read_text().split()]
    assert links and max(t for _, t in links) < 8
