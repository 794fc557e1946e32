"""One exception tree: every error stackcheck raises on purpose says what is wrong and how to fix it."""

from __future__ import annotations


class StackcheckError(Exception):
    """Base of all stackcheck errors. ``problem`` names what is wrong, ``fix`` what to do about it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}\n  fix: {self.fix}"


class EngineError(StackcheckError):
    """No usable Docker engine."""


class ImageError(StackcheckError):
    """An image could not be built or is not there."""


class ImageMissingError(ImageError):
    """An image needed at run time has not been built."""


class ImageBuildError(ImageError):
    """A build step failed; ``log_tail`` holds the last lines of its output."""

    def __init__(self, problem: str, fix: str, log_tail: str = "") -> None:
        super().__init__(problem, fix)
        self.log_tail = log_tail

    def __str__(self) -> str:
        tail = f"\n  last lines of the build log:\n{self.log_tail}" if self.log_tail else ""
        return f"{super().__str__()}{tail}"


class StackFileError(StackcheckError):
    """A stack file is unreadable, malformed or inconsistent."""


class StackError(StackcheckError):
    """A stack could not be booted, or was asked for something it does not have."""


class ToxiproxyError(StackcheckError):
    """The Toxiproxy API refused or did not answer."""


class PolicyError(StackcheckError):
    """A policy file is unreadable, malformed or names what does not exist."""
