"""The CLI wrapper: a user error is one `error:` line with exit code 2; Ctrl-C is one line with exit code 130."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO

from pipeline.core.errors import INTERRUPTED_RESUMABLE, UserError, cli_entry, one_line


def test_user_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    @cli_entry
    def main() -> None:
        raise UserError("data.csv: row 3:\n  rank 'x' is not a number")

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: data.csv: row 3: rank 'x' is not a number\n"


@pytest.mark.parametrize(
    ("decorate", "line"),
    [(cli_entry, "interrupted"), (cli_entry(interrupted=INTERRUPTED_RESUMABLE), INTERRUPTED_RESUMABLE)],
    ids=["plain", "resumable"],
)
def test_ctrl_c_is_one_line_exit_130(decorate, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    @decorate
    def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_the_wrapped_main_returns_its_value_and_keeps_its_name() -> None:
    @cli_entry(interrupted="x")
    def main(value: int) -> int:
        return value + 1

    assert main(1) == 2 and main.__name__ == "main"


def test_a_real_sigint_ends_a_cli_with_exit_130_and_no_traceback() -> None:
    script = (
        "import sys, time\n"
        "from pipeline.core.errors import cli_entry\n"
        "@cli_entry\n"
        "def main():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "main()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - start < 10
    assert stderr.strip().splitlines() == ["interrupted"]


def test_one_line_joins_and_cuts() -> None:
    assert one_line("a\n b\tc") == "a b c"
    assert one_line(ValueError(""), with_type=True) == "ValueError: ValueError"
    assert one_line("x" * 50, limit=10) == "xxxxxxx..."
