"""Every hostile input of tests/bad_inputs gets its documented answer from `melep rank`.

One table-driven test over the generated corpus (see tests/bad_inputs/make_corpus.py for the answers):
exit code, the stderr lines, the file (or record) named and a fragment of the reason, the --output
file written only when there is a result, and never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_inputs.make_corpus import CASE_NAMES, GOOD_CHECKPOINT, Case, make_corpus, rank_command

from melep_cli.cli import run


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Case]]:
    directory = tmp_path_factory.mktemp("bad_inputs")
    return directory, make_corpus(directory)


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "Traceback" not in captured.err
    assert all(line.startswith(("melep: warning: ", "melep: error: ", "melep: wrote ")) for line in lines), lines
    return captured.out, lines


def _one_error_line(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("melep: error: ")]
    assert len(errors) == 1, lines
    assert lines[-1] == errors[0], "the error is the last line"
    return errors[0]


def _names_file_and_reason(line: str, case: Case) -> None:
    assert case.names in line, f"{case.names!r} not named in {line!r}"
    assert case.reason.casefold() in line.casefold(), f"reason {case.reason!r} not in {line!r}"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_bad_input_gets_its_documented_answer(
    name: str, corpus: tuple[Path, dict[str, Case]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, cases = corpus
    case = cases[name]
    output = tmp_path / "ranking.json"
    argv = [*rank_command(case, directory), "--device", "cpu", "--format", "json", "--output", str(output)]
    code = run(argv)
    _, lines = _stderr_lines(capsys)

    if case.kind == "target":
        assert code == 2, lines
        _names_file_and_reason(_one_error_line(lines), case)
        assert not output.exists(), "a failed run must not leave an output file"
    elif case.kind == "checkpoint":
        assert code == 1, lines
        assert not [line for line in lines if line.startswith("melep: error: ")], lines
        assert any(case.names in line and case.reason.casefold() in line.casefold() for line in lines), lines
        results = json.loads(output.read_text())["results"]
        good, bad = results
        assert (good["status"], good["rank"], Path(good["path"]).name) == ("ok", 1, GOOD_CHECKPOINT.name)
        assert (bad["status"], bad["rank"], bad["path"]) == ("error", None, str(case.path))
        _names_file_and_reason(bad["error"], case)
        assert "\n" not in bad["error"]
    elif case.kind == "record":
        assert code == 0, lines
        warnings = [line for line in lines if case.names in line and case.reason.casefold() in line.casefold()]
        assert len(warnings) == 1, lines
        assert json.loads(output.read_text())["results"][0]["status"] == "ok"
        output.unlink()
        code = run([*argv, "--strict"])
        _, lines = _stderr_lines(capsys)
        assert code == 2, lines
        line = _one_error_line(lines)
        _names_file_and_reason(line, case)
        assert "strict mode" in line
        assert not output.exists()
    else:
        assert case.kind == "accepted"
        assert code == 0, lines
        assert json.loads(output.read_text())["results"][0]["status"] == "ok"
    assert not list(directory.rglob("UNPICKLED*")), "a pickle in the corpus was loaded"
    assert [path.name for path in tmp_path.iterdir()] in ([], [output.name]), "temporary files left behind"


def test_debug_shows_the_traceback_of_a_target_error(
    corpus: tuple[Path, dict[str, Case]], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, cases = corpus
    code = run([*rank_command(cases["hdf5_truncated"], directory), "--debug"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("melep: error: ")


def test_the_corpus_script_writes_a_folder_for_manual_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).parent / "bad_inputs" / "make_corpus.py"
    folder = tmp_path / "corpus"
    done = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("melep rank ")]
    assert len(commands) == len(CASE_NAMES)
    assert (folder / "hdf5" / "truncated.h5").is_file() and (folder / "checkpoints" / "weights.pth").is_file()
