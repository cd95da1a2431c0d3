"""The examples' catalogue: each saga, its steps and kinds, its size, and the seed's figures.

``python -m examples.catalog`` prints the two tables of ``examples/README.md``; a test
checks that the README's tables are exactly these, so the figures there stay true.

How lines are counted: the saga class's source, from its first decorator to its last
line (``inspect.getsourcelines``). *Code lines* leave out blank lines, comment-only
lines and docstrings; *all lines* keep them. Event classes, participants and helpers
outside the class are not counted: the class is what sagaflow asks a user to write.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

import attrs

from sagaflow import Retry, SagaSpec, StepKind, StepSpec, spec_of
from sagaflow.clock import duration

__all__ = ["Entry", "class_lines", "entries", "kinds_table", "lines_table"]


@attrs.frozen
class Entry:
    example: str  #: the package under examples/
    seed: str
    saga: type
    seed_figure: str  #: what the seed says its own version took

    @property
    def label(self) -> str:
        if self.example.endswith(".py"):
            return f"`{self.example}` ({self.seed})"
        return f"`{self.example}/` (seed {self.seed})"


@functools.cache
def entries() -> tuple[Entry, ...]:
    """Every example saga, in the order of the seeds."""
    from .checkout.saga import CheckoutSaga
    from .choreography.saga import OrderFlow
    from .onboarding.saga import OnboardClientSaga
    from .orders.saga import OrderSaga
    from .payouts.saga import PayoutBatchSaga
    from .quickstart import TransferSaga
    from .registration.saga import RegistrationSaga
    from .subscriptions.saga import UnbundleSaga
    from .transfer.saga import TransferMoneySaga

    return (
        Entry("subscriptions", "000", UnbundleSaga,
              "~150 lines of orchestration boilerplate saved per saga by its SagaStep "
              "macro; 2,073 lines for the whole workflow"),
        Entry("registration", "001", RegistrationSaga,
              "a hand-written SagaCoordinator of ~58 lines before any step "
              "(no retries, no timeouts, no record)"),
        Entry("onboarding", "002", OnboardClientSaga,
              "a ~20-line TypeScript skeleton that names the steps; compensation, "
              "retries and state left to write"),
        Entry("orders", "003", OrderSaga,
              "no code: a YAML spec of 3 steps, each with action, compensation, "
              "timeout and retries"),
        Entry("transfer", "004", TransferMoneySaga,
              "~15 lines to assemble with its SagaOrchestrator, plus ~50 for its two "
              "step structs and their SagaStep impls; 60-80 lines by hand"),
        Entry("checkout", "002", CheckoutSaga,
              "one line: commands are \"dispatched sequentially or in parallel\"; "
              "nothing says how a parallel failure is undone"),
        Entry("payouts", "002", PayoutBatchSaga,
              "none: a batch (one step per item of a list) is issue 12's; "
              "Step Functions' Map state is the nearest"),
        Entry("choreography", "002/003", OrderFlow,
              "none: both seeds find choreography \"hard to track and debug\" and give "
              "no code; the participants are each a service of their own"),
        Entry("quickstart.py", "the README", TransferSaga, "-"),
    )


def class_lines(cls: type) -> tuple[int, int]:
    """``(code lines, all lines)`` of a class's source, decorators included."""
    source_lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(source_lines))
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            end = body[0].end_lineno or body[0].lineno
            docstrings.update(range(body[0].lineno, end + 1))
    lines = source.splitlines()
    code = [
        line
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    ]
    return len(code), len(lines)


def _kind(spec: SagaSpec, step: StepSpec) -> str:
    kind: StepKind = step.kind
    text = kind.value
    if step.group is not None:  # a parallel group's member
        group = spec.groups[step.group]
        at_once = "all" if group.limit is None else str(group.limit)
        text += f" in parallel group `{group.name}` ({at_once} at once)"
    if step.each is not None:  # a fan-out
        at_once = "all" if step.each.limit is None else str(step.each.limit)
        text += f", for each of `{step.each.field}` ({at_once} at once)"
    wait = step.wait
    if wait is not None:  # a wait: what for, and what its timeout means
        if wait.signal is None:
            text = "timer"
        else:
            payload = f" ({wait.payload.__name__})" if wait.payload is not None else ""
            text = f"wait for signal `{wait.signal}`{payload}; on timeout {wait.on_timeout.value}"
    if step.compensation_name:
        text += f" (undo: `{step.compensation_name}`)"
    if step.when is not None:
        text += f", only if `{step.guard_name}`"
    return text


def _retry(retry: Retry) -> str:
    if retry.attempts == 1:
        return "-"
    on = ", ".join(t.__name__ for t in retry.retry_on)
    when = f" if `{retry.retry_if.__name__}`" if retry.retry_if is not None else ""
    return f"{retry.attempts} tries, from {retry.backoff:g}s, on {on}{when}"


def kinds_table() -> str:
    """A markdown table: every saga, its steps in order, their kinds and policies."""
    rows = [
        "| example | saga | # | step | kind | timeout | retry |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries():
        spec = spec_of(e.saga)
        for s in spec.steps:
            first = s.index == 0
            limit = s.timeout if s.wait is None else s.wait.timeout
            timeout = "-" if limit is None else duration(limit)
            rows.append(
                f"| {e.label if first else ''} | {f'`{spec.name}`' if first else ''} "
                f"| {s.index + 1} | `{s.name}` | {_kind(spec, s)} | {timeout} | {_retry(s.retry)} |"
            )
    return "\n".join(rows)


def lines_table() -> str:
    """A markdown table: each saga class's size next to the seed's own figure."""
    rows = [
        "| saga | code lines | all lines | the seed's own figure |",
        "| --- | ---: | ---: | --- |",
    ]
    for e in entries():
        code, total = class_lines(e.saga)
        rows.append(f"| `{spec_of(e.saga).name}` | {code} | {total} | {e.seed_figure} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(kinds_table())
    print()
    print(lines_table())
