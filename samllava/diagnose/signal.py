"""What a profile can answer without normal images. Light (the profile's fields only), so that the
command line refuses such a request before it imports torch."""
from __future__ import annotations

from samllava.core.config import Profile


def no_signal_message(profile: Profile, what: str) -> str | None:
    """Why ``profile`` cannot answer ``what`` without normal images, or None when it can: without them
    only the zero-shot CLIP term judges, and random CLIP weights carry no signal (tiny, offline)."""
    if profile.clip.weights is not None:
        return None
    give = ("--support DIR with a few normal images" if what == "diagnose"
            else "--shots K (K normal train/good images per category)")
    return (f"profile {profile.name!r} has no zero-shot signal (its CLIP has random weights), so {what} without "
            f"normal images would answer at random; pass {give}, or use the paper profile with its weights")


def profiles_without_signal(profiles: list[Profile]) -> list[str]:
    """The names of ``profiles`` that need normal images (their CLIP has random weights)."""
    return [p.name for p in profiles if no_signal_message(p, "diagnose")]
