"""A fake run in a process of its own (the benchmarks' fake ModelsLab: a provider does not
share an interpreter with the AWS stand-in), driven by lines on its stdin and stdout."""

from __future__ import annotations

import json
import subprocess
from typing import Any


class LineProcess:
    """``argv``'s process. Its first line out is its URL; it answers each command written to
    it with one line."""

    def __init__(self, argv: list[str]) -> None:
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.url = self._read()

    def ask(self, command: str) -> str:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._read()

    def finish(self, command: str) -> dict[str, Any]:
        """The process's last answer (JSON), then it ends."""
        answer: dict[str, Any] = json.loads(self.ask(command))
        self._proc.wait(30)
        return answer

    def _read(self) -> str:
        assert self._proc.stdout is not None
        return self._proc.stdout.readline().strip()
