"""A long job's result files as they are written: each a temporary file beside where it goes
(``.<sid><suffix>.<8 hex>.tmp`` in the uploads folder), so that a video's drawing or a batch's
zip is never held in memory; handed on in the job's ``Outcome`` when it is done, removed when
it is not (a killed worker's are swept as any stale temporary file)."""
from __future__ import annotations

from pathlib import Path

from ..jobs.atomic import temp_path_for


class OutputFiles:
    """One job's result files while they are written (a context: removed on leaving unless
    kept)."""

    def __init__(self, folder: Path, sid: str):
        folder.mkdir(parents=True, exist_ok=True)  # (an RQ worker's own may not exist yet)
        self.folder, self.sid = folder, sid
        self.paths: dict[str, Path] = {}
        self.kept = False

    def path(self, suffix: str) -> Path:
        """Where the job's ``suffix`` file is written until it is done."""
        if suffix not in self.paths:
            self.paths[suffix] = temp_path_for(self.folder / f"{self.sid}{suffix}")
        return self.paths[suffix]

    def keep(self) -> dict[str, Path]:
        """The files, for the job's Outcome: no longer removed on leaving."""
        self.kept = True
        return dict(self.paths)

    def __enter__(self) -> "OutputFiles":
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.kept:
            for path in self.paths.values():
                path.unlink(missing_ok=True)
