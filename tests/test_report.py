"""`imrestore report` and `imrestore paper-table` against real git + DVC repositories with a tiny fake pipeline.

The fake `evaluate` stage writes what the real one does (metrics/<task>.json, the per-image table, DVCLive
curves) with numbers computed from params, so every number a report shows is known exactly.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from pathlib import Path

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from commands import sh

from imrestore.app.report import GRID, paired_delta, paper_table, results_from_exp_show, seed_std, write_report
from imrestore.errors import ImrestoreError

pytestmark = pytest.mark.timeout(600)

EVALUATE = textwrap.dedent('''\
    """Stands in for the evaluate stage: numbers follow from params, so tests know them exactly."""
    import json, os, sys, time
    from pathlib import Path
    import yaml

    task = sys.argv[1]
    log = os.environ.get("IMRESTORE_TEST_RUNLOG")
    if log:  # the queue test checks that experiments ran one at a time
        with open(log, "a") as f:
            f.write(f"start {time.time()}\\n")
        time.sleep(0.5)
    params = yaml.safe_load(open("params.yaml"))
    blocks, kernel = params["model"]["blocks"], params["model"]["dcn_kernel"]
    dataset = {"deblur": "gopro", "denoise": "sidd"}[task]
    psnr = round(20 + 0.5 * blocks + 0.1 * kernel + (0.3 if task == "denoise" else 0), 4)
    ssim = round(0.5 + 0.01 * blocks + 0.001 * kernel, 4)
    Path(f"metrics/{task}").mkdir(parents=True, exist_ok=True)
    Path(f"metrics/{task}.json").write_text(json.dumps({
        "task": task, "dataset": dataset, "split": "test", "n_images": 3,
        "data": "sample" if params["download"][dataset]["source"] == "sample" else "real",
        "psnr": psnr, "ssim": ssim, "input": {"psnr": 18.0, "ssim": 0.5},
        "baselines": {"unsharp_mask": {"psnr": 18.5, "ssim": 0.52}, "wiener": {"psnr": 19.0, "ssim": 0.51}},
        "model": {"parameters": 1000 * blocks, "blocks": blocks, "dcn_kernel": kernel, "features": 8},
        "inference": {"device": "cpu"}}))
    Path(f"metrics/{task}/per_image.csv").write_text("name,psnr,ssim,input_psnr\\n" + "".join(
        f"img{i},{psnr + i - 1},{ssim},{18 + i}\\n" for i in range(3)))
    curves = Path(f"dvclive/{task}/plots/metrics")
    for folder in ("train", "val"):
        (curves / folder).mkdir(parents=True, exist_ok=True)
    (curves / "train/loss.tsv").write_text("step\\tloss\\n" + "".join(
        f"{s}\\t{1 / (s + 1) / blocks}\\n" for s in range(4)))
    (curves / "val/psnr.tsv").write_text("step\\tpsnr\\n" + "".join(f"{s}\\t{psnr - 3 + s}\\n" for s in range(4)))
    (curves / "epoch.tsv").write_text("step\\tepoch\\n0\\t0\\n")
    if log:
        with open(log, "a") as f:
            f.write(f"end {time.time()}\\n")
    ''')

DVC_YAML = textwrap.dedent("""\
    stages:
      evaluate:
        foreach: [deblur, denoise]
        do:
          cmd: python stages/evaluate.py ${item}
          deps: [stages/evaluate.py]
          params: [model, download]
          metrics:
            - metrics/${item}.json:
                cache: false
          plots:
            - metrics/${item}/per_image.csv:
                cache: false
                x: name
                y: psnr
            - dvclive/${item}/plots/metrics:
                cache: false
                x: step
    """)

PARAMS = {"model": {"blocks": 9, "dcn_kernel": 3, "features": 8},
          "train": {"max_steps": 4, "batch_size": 2, "crop": 16},
          "download": {"gopro": {"source": "sample"}, "sidd": {"source": "sample"}}}


def expected(task: str, blocks: int, kernel: int) -> tuple[float, float]:
    """(psnr, ssim) that EVALUATE writes."""
    return (20 + 0.5 * blocks + 0.1 * kernel + (0.3 if task == "denoise" else 0),
            0.5 + 0.01 * blocks + 0.001 * kernel)


def commit(repo: Path, message: str) -> str:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", message, cwd=repo)
    return sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()


def set_params(repo: Path, **model) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"].update(model)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def new_project(repo: Path, with_pipeline: bool = True) -> Path:
    """git + DVC repository; identity in the repo's own config, which DVC's experiment commits read too."""
    sh("git", "init", "-q", cwd=repo)
    sh("git", "config", "user.name", "t", cwd=repo)
    sh("git", "config", "user.email", "t@example.com", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    if with_pipeline:
        add_pipeline(repo)
    return repo


def add_pipeline(repo: Path) -> None:
    (repo / "stages").mkdir(exist_ok=True)
    (repo / "stages/evaluate.py").write_text(EVALUATE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    sh("dvc", "repro", "-q", cwd=repo)


def linked_pngs(report: Path) -> list[Path]:
    """The PNGs report.md links (checked to exist, decode as PNG and be non-empty), and that none is unlinked."""
    names = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report.read_text())
    assert names and sorted(names) == sorted(p.name for p in report.parent.glob("*.png"))
    for name in names:
        path = report.parent / name
        assert path.stat().st_size > 0 and not Path(name).is_absolute()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    return [report.parent / name for name in names]


def md_row(*cells: str) -> str:
    """A regex for one row of a markdown table (dvc pads its cells with spaces)."""
    return r"\|\s*" + r"\s*\|\s*".join(re.escape(c) for c in cells) + r"\s*\|"


# --- the pull-request report --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """init (no pipeline) → evaluate at 9 blocks → an experiment at 12 blocks; reports taken along the way."""
    repo = new_project(tmp_path_factory.mktemp("history"), with_pipeline=False)
    out = tmp_path_factory.mktemp("reports")
    shas = {"init": commit(repo, "init")}
    add_pipeline(repo)
    shas["nine"] = commit(repo, "evaluate at 9 blocks")
    reports = {}

    sh("dvc", "exp", "run", "-q", "-S", "model.blocks=12", "--name", "blk12", cwd=repo)
    reports["exp"] = write_report("HEAD", exp="blk12", out=out / "exp", cwd=repo)
    sh("git", "checkout", "--", ".", cwd=repo)  # back to 9 blocks; then the same change by hand

    set_params(repo, blocks=12)
    sh("dvc", "repro", "-q", cwd=repo)
    reports["workspace"] = write_report("HEAD", out=out / "workspace", cwd=repo)
    shas["twelve"] = commit(repo, "12 blocks")
    cli = sh("imrestore", "report", "--base", "HEAD~1", "--rev", "HEAD", "--out", str(out / "commits"), cwd=repo)
    reports["commits"] = out / "commits/report.md"
    reports["from_init"] = write_report(shas["init"], rev="HEAD", out=out / "from_init", cwd=repo)
    return {"repo": repo, "out": out, "shas": shas, "reports": reports, "cli": cli}


def assert_nine_to_twelve(text: str, old: str, new: str) -> None:
    assert re.search(md_row("params.yaml", "model.blocks", "9", "12"), text), "params diff shows 9 → 12"
    for task in ("deblur", "denoise"):
        (psnr9, ssim9), (psnr12, ssim12) = expected(task, 9, 3), expected(task, 12, 3)
        # dvc metrics diff, verbatim: old, new and the change
        assert re.search(md_row(f"metrics/{task}.json", "psnr", f"{psnr9:g}", f"{psnr12:g}", "1.5"), text)
        assert re.search(md_row(f"metrics/{task}.json", "ssim", f"{ssim9:g}", f"{ssim12:g}", "0.03"), text)
        # the headline table: the change (every image gained the same, so the interval is a point; no seed noise
        # file, so the interval alone labels it), then the compared side against the input and the best baseline
        assert (f"| PSNR (dB) | {psnr9:.2f} | {psnr12:.2f} | +1.50 [+1.50, +1.50] **improved** "
                f"| 18.00 (+{psnr12 - 18:.2f}) | 19.00 `wiener` (+{psnr12 - 19:.2f}) |") in text
        assert (f"| SSIM | {ssim9:.4f} | {ssim12:.4f} | +0.0300 [+0.0300, +0.0300] **improved** "
                f"| 0.5000 (+{ssim12 - 0.5:.4f}) ") in text
        verdict = (f"- **{task}**: PSNR improved (+1.50 dB [+1.50, +1.50], seed noise not measured); "
                   "SSIM improved (+0.0300 [+0.0300, +0.0300], seed noise not measured)\n")
        assert verdict in text and text.index(verdict) < text.index("- base:"), "the verdict comes first"
    assert ("Change: the mean per-image difference over the 3 test images on both sides, with a 95% paired "
            "bootstrap interval (10,000 resamples of the images). Seed noise not measured (no "
            "benchmarks/results/seed_noise.json at either revision)") in text
    assert f"| metric | base {old} | compared {new} |" in text
    assert "embedded sample (synthetic GoPro-like data), trained 4 steps of 2 × 16² crops, evaluated on cpu: " \
           "not comparable with the paper" in text
    assert "Per-image PSNR, compared against base" in text


def test_report_on_the_workspace_against_head(history):
    report = history["reports"]["workspace"]
    text = report.read_text()
    assert text.startswith("# imrestore report: workspace vs `HEAD`")
    assert "## Deblurring: GoPro (`deblur`)" in text and "## Denoising: SIDD (`denoise`)" in text
    assert f"- compared: workspace (on {history['shas']['nine'][:7]} evaluate at 9 blocks, with uncommitted" in text
    assert_nine_to_twelve(text, "`HEAD`", "workspace")
    pngs = linked_pngs(report)
    assert {p.name for p in pngs} == {f"{t}_{kind}.png" for t in ("deblur", "denoise") for kind in ("curves",
                                                                                                     "per_image")}
    assert not list(report.parent.parent.glob(".tmp-*")), "written atomically, nothing left behind"


def test_report_between_two_commits_from_the_command_line(history):
    assert "wrote" in history["cli"].stdout and "4 plots" in history["cli"].stdout
    text = history["reports"]["commits"].read_text()
    assert f"- base: `HEAD~1` → {history['shas']['nine'][:7]} evaluate at 9 blocks" in text
    assert f"- compared: `HEAD` → {history['shas']['twelve'][:7]} 12 blocks" in text
    assert "`dvc metrics diff --md HEAD~1 HEAD`:" in text and "`dvc params diff --md HEAD~1 HEAD`:" in text
    assert_nine_to_twelve(text, "`HEAD~1`", "`HEAD`")
    linked_pngs(history["reports"]["commits"])


def test_report_on_an_experiment(history):
    text = history["reports"]["exp"].read_text()
    assert text.startswith("# imrestore report: experiment `blk12` vs `HEAD`")
    assert f"based on {history['shas']['nine'][:7]} evaluate at 9 blocks" in text
    assert "`dvc metrics diff --md HEAD blk12`:" in text
    assert re.search(r"\|\s*Path\s*\|\s*Param\s*\|\s*HEAD\s*\|\s*blk12\s*\|", text), "dvc resolves the name"
    assert_nine_to_twelve(text, "`HEAD`", "experiment `blk12`")
    linked_pngs(history["reports"]["exp"])


def test_a_base_without_metrics_is_reported_not_fatal(history):
    report = history["reports"]["from_init"]
    text = report.read_text()
    init = history["shas"]["init"][:7]  # given in full, shown short
    assert f"- base: **no metrics/deblur.json at `{init}`** (the revision predates the evaluate stage" in text
    assert f"No curves (dvclive/deblur/plots/metrics) at `{init}`." in text
    assert "the compared side against its degraded input" in text
    psnr12, _ = expected("deblur", 12, 3)
    assert f"| PSNR (dB) | — | {psnr12:.2f} | — | 18.00 (+{psnr12 - 18:.2f}) |" in text
    assert f"No interval: no per-image results (metrics/deblur/per_image.csv) at base `{init}`." in text
    assert f"- **deblur**: PSNR —, SSIM —; no interval: no per-image results (metrics/deblur/per_image.csv) at " \
           f"base `{init}`." in text
    assert re.search(md_row("metrics/deblur.json", "psnr", "-", f"{psnr12:g}", "-"), text)
    linked_pngs(report)


def test_plots_are_deterministic(history, tmp_path):
    again = write_report("HEAD~1", rev="HEAD", out=tmp_path / "again", cwd=history["repo"])
    for png in linked_pngs(again):
        assert png.read_bytes() == (history["out"] / "commits" / png.name).read_bytes()


def test_bad_revisions_are_clear_errors_and_keep_the_previous_report(history):
    repo, previous = history["repo"], history["reports"]["commits"]
    before = previous.read_bytes()
    failed = sh("imrestore", "report", "--base", "no-such-rev", "--out", str(previous.parent), cwd=repo, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "unknown revision 'no-such-rev'" in failed.stderr and "dvc exp list" in failed.stderr
    assert previous.read_bytes() == before
    with pytest.raises(ImrestoreError, match="no DVC experiment named 'nope'"):
        write_report("HEAD", exp="nope", out=history["out"] / "nope", cwd=repo)
    with pytest.raises(ImrestoreError, match="unknown revision 'HEAD~9'"):
        write_report("HEAD", rev="HEAD~9", out=history["out"] / "nope", cwd=repo)
    assert not (history["out"] / "nope").exists()


@pytest.fixture
def clone(tmp_path) -> Path:
    """A git + DVC repository with one commit and no pipeline: a report of it is quick, and has no plots."""
    (tmp_path / "clone").mkdir()
    repo = new_project(tmp_path / "clone", with_pipeline=False)
    (repo / "README.md").write_text("# the project\n")
    commit(repo, "init")
    return repo


def test_out_is_never_a_folder_or_file_the_report_did_not_write(clone):
    (clone / "mynotes").mkdir()
    (clone / "mynotes" / "todo.md").write_text("mine")
    for out, found in (("mynotes", "holds what a report did not write (todo.md)"),
                       ("README.md", "is a file; expected the report's folder"),
                       (".", "holds what a report did not write (.dvc, .dvcignore, .git, README.md, mynotes and 1 more)"),
                       ("README.md/sub", "README.md is a file; expected the folder that holds the report's folder")):
        result = sh("imrestore", "report", "--base", "HEAD", "--out", out, cwd=clone, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: ") and found in result.stderr
    assert (clone / "mynotes" / "todo.md").read_text() == "mine"
    assert (clone / "README.md").read_text() == "# the project\n"
    assert sh("git", "status", "--porcelain", cwd=clone).stdout == "?? mynotes/\n", "the repository is as it was"


def test_a_previous_report_is_replaced_and_nothing_else(clone):
    first = write_report("HEAD", out="build/pr-report", cwd=clone)
    assert first.read_text().startswith("# imrestore report: workspace vs `HEAD`")
    (first.parent / "deblur_curves.png").write_bytes(b"a plot an older report left")
    second = write_report("HEAD", rev="HEAD", out="build/pr-report", cwd=clone)
    assert second == first and second.read_text().startswith("# imrestore report: `HEAD` vs `HEAD`")
    assert [p.name for p in second.parent.iterdir()] == ["report.md"], "the old plot went with the old report"
    assert not list(second.parent.parent.glob(".tmp-*"))
    for stranger, why in (("notes.txt", "notes.txt"), ("report.md", 'report.md without the title "# imrestore report:"')):
        (second.parent / stranger).write_text("mine")
        with pytest.raises(ImrestoreError, match=re.escape(f"holds what a report did not write ({why})")):
            write_report("HEAD", out="build/pr-report", cwd=clone)
        assert (second.parent / stranger).read_text() == "mine"
        (second.parent / stranger).unlink()
    empty = clone / "build" / "empty"
    empty.mkdir()
    assert write_report("HEAD", out=empty, cwd=clone).is_file(), "an empty folder is free to use"


def seed_noise_file(std: dict[str, dict[str, float]], data: str = "sample") -> str:
    """benchmarks/results/seed_noise.json as the seed-noise benchmark writes it; std: {task: {metric: σ}}."""
    tasks = {task: {"input_psnr": 18.0, **{key: {"values": [20.0, 20.0 + s, 20.0 - s], "mean": 20.0, "std": s}
                                           for key, s in metrics.items()}} for task, metrics in std.items()}
    return json.dumps({"seeds": [0, 1, 2], "tasks": tasks, "data": data})


def test_seed_noise_from_the_compared_side_labels_the_report(history, tmp_path):
    """Every image gained 1.50 dB and 0.03 SSIM (9 → 12 blocks); the seed noise decides what that means."""
    repo = history["repo"]
    noise = repo / "benchmarks/results/seed_noise.json"
    noise.parent.mkdir(parents=True)
    try:  # in the workspace only: the compared side; HEAD~1, the base, has none
        noise.write_text(seed_noise_file({"deblur": {"psnr": 1.0, "ssim": 0.001}, "denoise": {"psnr": 0.1}}))
        text = write_report("HEAD~1", out=tmp_path / "noise", cwd=repo).read_text()
        noise.write_text(seed_noise_file({"deblur": {"psnr": 1.0}}, data="real"))
        other_data = write_report("HEAD~1", out=tmp_path / "real", cwd=repo).read_text()
    finally:
        noise.unlink()
        noise.parent.rmdir()
        noise.parent.parent.rmdir()
    # deblur's PSNR gain is under 2·√2·1.0 = 2.83 dB; its SSIM gain is over 2·√2·0.001
    assert ("- **deblur**: PSNR within noise (+1.50 dB [+1.50, +1.50], seed noise σ 1.00 dB); "
            "SSIM improved (+0.0300 [+0.0300, +0.0300], seed noise σ 0.0010)") in text
    assert ("- **denoise**: PSNR improved (+1.50 dB [+1.50, +1.50], seed noise σ 0.10 dB); "
            "SSIM improved (+0.0300 [+0.0300, +0.0300], seed noise not measured)") in text
    assert "| +1.50 [+1.50, +1.50] **within noise** |" in text.split("## Deblurring")[1].split("## Denoising")[0]
    assert ("Seed noise (benchmarks/results/seed_noise.json at workspace, 3 seeds): PSNR σ 1.00 dB, threshold "
            "2·√2·σ = 2.83 dB; SSIM σ 0.0010, threshold 2·√2·σ = 0.0028.") in text
    # noise measured on other data than the compared side's does not apply
    assert "- **deblur**: PSNR improved (+1.50 dB [+1.50, +1.50], seed noise not measured)" in other_data
    assert ("Seed noise not measured (benchmarks/results/seed_noise.json at workspace was measured on real data, "
            "this is sample)") in other_data


def test_a_revision_against_itself_is_unchanged(history, tmp_path):
    text = write_report("HEAD", rev="HEAD", out=tmp_path / "same", cwd=history["repo"]).read_text()
    for task in ("deblur", "denoise"):
        assert (f"- **{task}**: PSNR unchanged (+0.00 dB [+0.00, +0.00], seed noise not measured); "
                "SSIM unchanged (+0.0000 [+0.0000, +0.0000], seed noise not measured)") in text
    assert "| +0.00 [+0.00, +0.00] **unchanged** |" in text


# --- paired_delta: the interval and the label -----------------------------------------------------------

def per_image(psnr, names=None) -> pd.DataFrame:
    names = [f"img{i:03d}" for i in range(len(psnr))] if names is None else names
    return pd.DataFrame({"name": names, "psnr": psnr, "ssim": 0.8, "input_psnr": 20.0, "input_ssim": 0.6})


def shifted(shift: float, jitter: float = 0.05, n: int = 40, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(base, head): head is base plus `shift` dB on every image, plus normal jitter of std `jitter`."""
    rng = np.random.default_rng(seed)
    base = rng.normal(25.0, 2.0, n)
    return per_image(base), per_image(base + shift + rng.normal(0.0, jitter, n))


@pytest.mark.parametrize("shift, label", [(0.5, "improved"), (-0.5, "regressed")])
def test_a_clear_shift_is_improved_or_regressed(shift, label):
    found = paired_delta(*shifted(shift), "psnr", seed_std=None)
    assert found.label == label and found.n == 40 and found.threshold == 0.0
    assert found.low < shift < found.high, "the interval holds the true shift"
    assert found.delta == pytest.approx(shift, abs=0.02)
    differences = shifted(shift)[1]["psnr"] - shifted(shift)[0]["psnr"]
    normal = 2 * 1.96 * differences.std(ddof=0) / math.sqrt(40)  # the 95% width the mean's normal limit gives
    assert found.high - found.low == pytest.approx(normal, rel=0.1)


def test_a_shift_within_the_seed_noise_is_within_noise():
    base, head = shifted(0.5)
    noisy = paired_delta(base, head, "psnr", seed_std=0.2)  # threshold 0.57 dB > 0.5
    assert noisy.threshold == pytest.approx(2 * math.sqrt(2) * 0.2)
    assert noisy.low > 0 and noisy.label == "within noise", "the interval alone would say improved"
    assert paired_delta(head, base, "psnr", seed_std=0.2).label == "within noise"
    assert paired_delta(base, head, "psnr", seed_std=0.1).label == "improved"  # threshold 0.28 dB


def test_symmetric_jitter_around_zero_is_within_noise():
    jitter = np.random.default_rng(2).normal(0.0, 0.3, 20)
    base = np.full(40, 25.0)
    found = paired_delta(per_image(base), per_image(base + np.concatenate([jitter, -jitter])), "psnr", None)
    assert found.low < 0 < found.high and found.delta == pytest.approx(0.0, abs=1e-12)
    assert found.label == "within noise"


def test_identical_tables_are_unchanged_and_a_tiny_change_is_not():
    base, _ = shifted(0.0)
    same = paired_delta(base, base.copy(), "psnr", seed_std=0.05)
    assert (same.label, same.delta, same.low, same.high, same.n) == ("unchanged", 0.0, 0.0, 0.0, 40)
    assert paired_delta(base, base.assign(psnr=base["psnr"] + 1e-12), "psnr", None).label == "unchanged"
    one = base.copy()
    one.loc[0, "psnr"] += 1e-6
    assert paired_delta(base, one, "psnr", None).label == "within noise"


def test_the_interval_is_deterministic():
    base, head = shifted(0.3, jitter=0.5)
    first = paired_delta(base, head, "psnr", None)
    assert paired_delta(base, head, "psnr", None) == first
    reordered = paired_delta(base.sample(frac=1, random_state=3), head.iloc[::-1], "psnr", None)
    assert reordered == first, "the row order does not change the draws"
    assert paired_delta(base, head, "psnr", None, seed=1).low != first.low, "the seed is what fixes the draws"


def test_images_on_one_side_only_are_not_paired():
    base, head = shifted(0.5)
    wider_base = pd.concat([base, per_image([0.0], names=["only_in_base"])], ignore_index=True)
    wider_head = pd.concat([per_image([99.0], names=["only_in_head"]), head], ignore_index=True)
    found = paired_delta(wider_base, wider_head, "psnr", None)
    assert found.n == 40 and found == paired_delta(base, head, "psnr", None)
    unreadable = head.copy()
    unreadable.loc[0, "psnr"] = float("nan")
    assert paired_delta(base, unreadable, "psnr", None) == paired_delta(base.iloc[1:], head.iloc[1:], "psnr", None)


def test_seed_std_reads_the_seed_noise_benchmark():
    noise = json.loads(seed_noise_file({"deblur": {"psnr": 0.05, "ssim": 0.002}}))
    assert seed_std(noise, "deblur", "psnr") == 0.05 and seed_std(noise, "deblur", "ssim") == 0.002
    assert seed_std(noise, "denoise", "psnr") is None, "a task the benchmark did not run"
    assert seed_std(noise, "deblur", "input_psnr") is None, "a number, not a metric across seeds"
    assert seed_std(None, "deblur", "psnr") is None, "no file"


def test_outside_a_dvc_or_git_repository(tmp_path):
    with pytest.raises(ImrestoreError, match="not inside a DVC repository"):
        write_report("HEAD", cwd=tmp_path)
    sh("dvc", "init", "-q", "--no-scm", cwd=tmp_path)
    with pytest.raises(ImrestoreError, match="not a git repository"):
        write_report("HEAD", cwd=tmp_path)


# --- the experiment queue and Table 2 -----------------------------------------------------------------

def queue_states(status: str) -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status` (it has no --json)."""
    rows = status.split("Worker status:")[0].strip().splitlines()[1:]
    return {row.split()[1]: row.split()[-1] for row in rows if row.strip()}


def wait_for_queue(repo: Path, env: dict, timeout: float = 300) -> dict[str, str]:
    """Poll `dvc queue status` until nothing is queued or running.

    A worker sometimes stops with experiments still queued (DVC issue #10562; e.g. after `dvc queue stop` was
    run with no worker): if no worker is left for a while but work is, start one again, as the issue advises.
    """
    deadline, stalled = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo).stdout
        states = queue_states(status)
        if not {"Queued", "Running"} & set(states.values()):
            return states
        no_worker = "Worker status: 0 active, 0 idle" in status and "Running" not in states.values()
        stalled = stalled + 1 if no_worker else 0
        if stalled >= 4:
            print(f"restarting a stopped queue worker (DVC issue #10562):\n{status}")
            sh("dvc", "queue", "start", "-j", "1", cwd=repo, env=env)
            stalled = 0
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}")


@pytest.fixture(scope="module")
def grid_repo(tmp_path_factory):
    repo = new_project(tmp_path_factory.mktemp("grid"))
    commit(repo, "evaluate")
    yield repo
    if not re.search(r"Worker status: 0 active, 0 idle", sh("dvc", "queue", "status", cwd=repo).stdout):
        sh("dvc", "queue", "stop", cwd=repo, check=False)  # only with a worker: a stop with none poisons the next


def experiments(repo: Path) -> dict[str, dict]:
    """{name: row} of the experiments `dvc exp show --json` lists for HEAD, with the executor merged in."""
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    return {exp["name"]: {**run, "executor": exp["executor"]}
            for baseline in shown for exp in baseline.get("experiments") or [] for run in exp["revs"]}


def test_a_queue_of_two_experiments_runs_one_at_a_time(grid_repo, tmp_path):
    runlog = tmp_path / "runs.log"
    env = {"IMRESTORE_TEST_RUNLOG": str(runlog)}  # the queue's worker passes its environment to the stages
    for blocks in (10, 11):
        queued = sh("dvc", "exp", "run", "--queue", "-S", f"model.blocks={blocks}", "--name", f"q{blocks}",
                    cwd=grid_repo)
        assert f"Queued experiment 'q{blocks}' for future execution." in queued.stdout
    assert sh("git", "status", "--porcelain", cwd=grid_repo).stdout == "", "queueing leaves the workspace alone"
    sh("dvc", "queue", "start", "-j", "1", cwd=grid_repo, env=env)
    states = wait_for_queue(grid_repo, env)
    assert states["q10"] == states["q11"] == "Success"

    shown = experiments(grid_repo)
    for blocks in (10, 11):
        run = shown[f"q{blocks}"]
        assert run["error"] is None and run["executor"]["state"] == "success"
        assert run["data"]["params"]["params.yaml"]["data"]["model"]["blocks"] == blocks
        metrics = run["data"]["metrics"]["metrics/deblur.json"]["data"]
        assert metrics["psnr"] == pytest.approx(expected("deblur", blocks, 3)[0])
    events = [line.split() for line in runlog.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end"] * 4, "2 experiments × 2 stages, never overlapping"
    times = [float(t) for _, t in events]
    assert times == sorted(times)


def test_paper_table_from_the_queued_grid(grid_repo, tmp_path):
    queued = sh("dvc", "exp", "run", "--queue", "-S", "model.blocks=9,12", "-S", "model.dcn_kernel=3,4",
                cwd=grid_repo)
    assert queued.stdout.count("Queued experiment") == 4
    for blocks, kernel in GRID:
        assert f"['model.blocks={blocks}', 'model.dcn_kernel={kernel}']" in queued.stdout
    sh("dvc", "queue", "start", "-j", "1", cwd=grid_repo)
    wait_for_queue(grid_repo, {})

    out = tmp_path / "table.md"
    shown = sh("imrestore", "paper-table", "--out", str(out), cwd=grid_repo, env={"COLUMNS": "100"})
    assert "Table 2, deblurring (GoPro)" in shown.stdout and "Table 2, denoising (SIDD)" in shown.stdout
    text = out.read_text()
    names = {name for name, run in experiments(grid_repo).items()}
    paper = {("deblur", 12, 4): ("26.60", "0.90"), ("denoise", 12, 3): ("26.63", "0.88")}
    for task, title in (("deblur", "## Deblurring: GoPro"), ("denoise", "## Denoising: SIDD")):
        section = text.split(title)[1].split("\n## ")[0]
        assert "Ours on the embedded sample (synthetic" in section and "not comparable with the paper" in section
        rows = [line for line in section.splitlines() if re.match(r"\| \d", line)]
        assert len(rows) == 4
        for row, (blocks, kernel) in zip(rows, GRID):
            cells = [c.strip() for c in row.strip("|").split("|")]
            psnr, ssim = expected(task, blocks, kernel)
            assert cells[:4] == [str(blocks), str(kernel), f"{psnr:.2f}", f"{ssim:.4f}"]
            assert tuple(cells[4:6]) == paper.get((task, blocks, kernel), ("", ""))
            assert cells[6:8] == ["3", "embedded sample"] and cells[8].strip("`") in names | {"workspace"}
    assert ("Other published rows (configuration not recorded in our notes): 26.53 dB / 0.89; 25.40 dB / 0.81; "
            "25.20 dB / 0.81.") in text
    assert "Other published rows (configuration not recorded in our notes): 25.73 dB / 0.83." in text
    assert "Configurations not run yet" not in text


def test_paper_table_keeps_only_successful_current_results(tmp_path):
    """Queued, failed and stale rows of `dvc exp show --json` never reach the table; the newest result wins."""
    def row(name, blocks, kernel, psnr, timestamp, state=None, error=None, metrics_blocks=None):
        metrics = {"psnr": psnr, "ssim": 0.5, "n_images": 3, "data": "sample",
                   "model": {"blocks": metrics_blocks or blocks, "dcn_kernel": kernel}}
        return {"rev": name, "name": name, "error": error, "executor": state and {"state": state},
                "data": {"timestamp": timestamp,
                         "params": {"params.yaml": {"data": {"model": {"blocks": blocks, "dcn_kernel": kernel}}}},
                         "metrics": {"metrics/deblur.json": {"data": metrics}}}}

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/deblur.json").write_text("{}")
    os.utime(tmp_path / "metrics/deblur.json", (0, 0))  # the workspace's result is old
    runs = [row("old", 9, 3, 21.0, "2026-01-01T00:00:00", "success"),
            row("new", 9, 3, 22.0, "2026-01-02T00:00:00", "success"),
            row("broken", 9, 3, 99.0, "2026-01-03T00:00:00", "failed", {"msg": "Experiment run failed"}),
            row("waiting", 9, 4, 99.0, "2026-01-03T00:00:00", "queued"),
            row("stale", 12, 4, 99.0, "2026-01-03T00:00:00", metrics_blocks=9)]
    shown = [{**row("workspace", 9, 3, 20.0, None), "rev": "workspace", "name": None, "experiments": None},
             {**row("main", 12, 3, 23.0, "2025-12-31T00:00:00"), "rev": "a" * 40,
              "experiments": [{"name": r["name"], "executor": r.pop("executor"), "revs": [r]} for r in runs]}]
    table = paper_table(results_from_exp_show(shown, tmp_path))["deblur"]
    picked = {(blocks, kernel): ours and (ours.source, ours.psnr) for blocks, kernel, ours, _ in table}
    assert picked == {(9, 3): ("new", 22.0), (9, 4): None, (12, 3): ("main", 23.0), (12, 4): None}


def test_the_paper_table_shows_other_architectures_beside_the_grid(tmp_path):
    """NAFNet rows never fill a Table 2 cell; they are listed below it, one per size, the newest of each."""
    from imrestore.app.report import paper_table_markdown, peer_table

    def row(name, model_params, metrics_model, psnr, timestamp):
        metrics = {"psnr": psnr, "ssim": 0.7, "n_images": 8, "data": "sample", "model": metrics_model}
        return {"rev": name, "name": name, "error": None, "executor": {"state": "success"},
                "data": {"timestamp": timestamp, "params": {"params.yaml": {"data": {"model": model_params}}},
                         "metrics": {"metrics/denoise.json": {"data": metrics}}}}

    small = {"arch": "nafnet", "width": 16, "size": "width 16, blocks 1-1-1-1 / 1 / 1-1-1-1"}  # as exp show keeps it
    named = {"arch": "nafnet", "width": 32, "size": "width 32, blocks 2-2-4-8 / 12 / 2-2-2-2"}
    published = {"NAFNet-SIDD-width32": {"psnr": 39.0, "ssim": 0.95, "model": named}}
    runs = [row("naf-old", {"arch": "nafnet"}, small, 27.0, "2026-01-01T00:00:00"),
            row("naf-new", {"arch": "nafnet"}, small, 28.0, "2026-01-02T00:00:00"),
            row("naf-sidd", {"arch": "nafnet", "nafnet": "sidd-width32"}, named, 29.0, "2026-01-02T00:00:00"),
            row("stale", {"arch": "paper", "blocks": 9, "dcn_kernel": 3}, small, 99.0, "2026-01-03T00:00:00"),
            row("paper", {"arch": "paper", "blocks": 9, "dcn_kernel": 3},
                {"arch": "paper", "blocks": 9, "dcn_kernel": 3}, 26.0, "2026-01-02T00:00:00")]
    runs[-1]["data"]["metrics"]["metrics/denoise.json"]["data"]["published"] = published
    shown = [{"rev": "a" * 40, "name": "main", "error": None, "data": None,
              "experiments": [{"name": r["name"], "executor": r.pop("executor"), "revs": [r]} for r in runs]}]
    results = results_from_exp_show(shown, tmp_path)
    table, peers = paper_table(results), peer_table(results)
    assert [(ours.source, ours.psnr) for blocks, kernel, ours, _ in table["denoise"] if ours] == [("paper", 26.0)]
    assert [(r.source, r.size, r.published) for r in peers["denoise"]] == [
        ("naf-new", "width 16, blocks 1-1-1-1 / 1 / 1-1-1-1", ""),
        ("naf-sidd", "width 32, blocks 2-2-4-8 / 12 / 2-2-2-2", ""),
        ("paper", "width 32, blocks 2-2-4-8 / 12 / 2-2-2-2", "NAFNet-SIDD-width32")]
    text = paper_table_markdown(table, peers)
    assert ("| NAFNet | width 32, blocks 2-2-4-8 / 12 / 2-2-2-2 | 39.00 | 0.9500 | 8 | embedded sample | published "
            "`NAFNet-SIDD-width32`, evaluated in `paper` |") in text
    assert "| NAFNet | width 16, blocks 1-1-1-1 / 1 / 1-1-1-1 | 28.00 | 0.7000 | 8 | embedded sample | `naf-new` |" in text
    assert "99.00" not in text and peers["deblur"] == []
