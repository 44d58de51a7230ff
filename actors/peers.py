"""Actor handles that travel by name: a pool of peers (engines, reward actors) copied into a restartable
environment actor pickles the peers' names, not their handles. Ray warns that handles in a restartable
actor's constructor arguments may be lost for a restart; a restarted actor looks the names up again."""

from __future__ import annotations

from typing import Any


def peers_state(handles: list[Any], names: list[str] | None) -> dict[str, Any]:
    """What a pool pickles: the names when the actors have them, else the handles."""
    return {"names": names} if names else {"handles": handles}


def peers_from_state(state: dict[str, Any]) -> tuple[list[Any], list[str] | None]:
    """The handles (looked up by name where named) and names of `peers_state`'s output."""
    import ray

    names = state.get("names")
    return ([ray.get_actor(n) for n in names] if names else state["handles"]), names
