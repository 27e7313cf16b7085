"""When to respawn a dead worker: a crash loop backs off, isolated deaths do not add up. Pure.

A worker that dies within ``window`` seconds of its start is a *quick* death. Each slot
counts its consecutive quick deaths (its streak); a worker that lived past the window
resets its slot's streak when it dies, so an OOM kill after weeks of service is a first
death, not the fifth. The first quick death is respawned at once; from the second on, the
respawn waits ``base_delay * 2 ** (streak - 2)`` seconds, capped at ``max_delay``.

The node gives up (the supervisor exits 1) only when no worker is serving and the slot
has died quickly ``give_up_after`` times in a row: a node that cannot start a worker at
all (a broken install) stops instead of spinning, while a node with one worker serving
never exits on its own; it logs, counts and backs off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CrashLoopPolicy"]


@dataclass
class CrashLoopPolicy:
    window: float = 5.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    give_up_after: int = 5
    streaks: dict[int, int] = field(default_factory=dict)  # slot -> consecutive quick deaths

    def on_death(self, slot: int, lifetime: float) -> float:
        """Count a death of ``slot``'s worker after ``lifetime`` seconds; returns the
        seconds to wait before respawning it."""
        if lifetime >= self.window:
            self.streaks[slot] = 0
            return 0.0
        streak = self.streaks.get(slot, 0) + 1
        self.streaks[slot] = streak
        return self.delay(streak)

    def delay(self, streak: int) -> float:
        if streak <= 1:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** (streak - 2))

    def gives_up(self, slot: int, *, serving: bool) -> bool:
        """Whether the node should stop rather than respawn ``slot`` again."""
        return not serving and self.streaks.get(slot, 0) >= self.give_up_after

    def streak(self, slot: int) -> int:
        return self.streaks.get(slot, 0)
