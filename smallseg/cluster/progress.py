"""One progress bar for a whole Dask job: tasks done of all, objects found so far, ETA (tqdm's, from the
task rate); and the per-task failures, one line each, for the summary."""

from __future__ import annotations

import threading


class JobProgress:
    """Thread-safe counters behind one tqdm bar (Dask runs future callbacks in its own thread).

    Args:
        total: tasks in the job (scenes, bands of split scenes, image stacks); ``add_tasks`` grows it.
        desc: the bar's label; enabled: False draws nothing (``--quiet``).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self._lock = threading.Lock()
        self.tasks_done = 0
        self.objects = 0
        self.failed = 0
        self.bar = tqdm(total=total, desc=desc, unit="task", disable=not enabled, dynamic_ncols=True)

    def add_tasks(self, n: int) -> None:
        with self._lock:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    def task_done(self, objects: int = 0, failed: bool = False) -> None:
        """One task finished (``objects`` found by it; ``failed``: it did not finish its unit)."""
        with self._lock:
            self.tasks_done += 1
            self.objects += int(objects)
            self.failed += bool(failed)
            self.bar.set_postfix(objects=self.objects, failed=self.failed, refresh=False)
            self.bar.update(1)

    def add_objects(self, objects: int) -> None:
        with self._lock:
            self.objects += int(objects)
            self.bar.set_postfix(objects=self.objects, failed=self.failed)

    def write(self, line: str) -> None:
        """A line above the bar (a failure, as it happens)."""
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
