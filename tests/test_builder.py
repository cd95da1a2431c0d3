"""SagaBuilder: sagas composed at run time are the sagas the decorators make (same spec,
machine, diagrams, fingerprint, runs), durable and recoverable by name, in this process
and in another one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from hypothesis import given, settings

from sagaflow import (
    Orchestrator,
    Retry,
    SagaBuilder,
    SagaDefinitionChanged,
    SagaDefinitionError,
    SagaRejected,
    SagaStatus,
    StepKind,
    StepStatus,
    definition,
    parallel,
    saga,
    spec_of,
    step,
    wait,
)
from sagaflow.cli import main
from sagaflow.diagram import render, to_dot, to_mermaid
from sagaflow.stores import MemoryStore, SQLiteStore
from sagaflow.testing import SagaCase, VirtualClock, check_invariants, failure_plans, run_plan

HERE = Path(__file__).resolve().parent

#: what the participants did, in order
called: list[str] = []
#: the participants whose next call fails (once), or crashes the process (KeyboardInterrupt)
FAIL: set[str] = set()
CRASH: set[str] = set()


@pytest.fixture(autouse=True)
def _clean() -> None:
    called.clear()
    FAIL.clear()
    CRASH.clear()


def act(name: str, ctx: Any) -> None:
    called.append(name)
    if name in CRASH:
        CRASH.discard(name)
        raise KeyboardInterrupt  # the process dies while the step runs
    if name in FAIL:
        FAIL.discard(name)
        raise RuntimeError(f"{name} is down")


def action(name: str) -> Callable[[Any, Any], None]:
    """A participant call made from data, named ``name`` (as a plugin's would be)."""

    def call(saga: Any, ctx: Any) -> None:
        act(name, ctx)

    call.__name__ = call.__qualname__ = name
    return call


@attrs.frozen
class Decision:
    approved: bool
    by: str


@attrs.define
class Onboarding:
    user: str = "u-1"
    amount: int = 10
    approved_by: str | None = None


def needs_approval(saga: Onboarding) -> bool:
    return saga.amount > 100


def decide(saga: Onboarding, decision: Decision, ctx: Any) -> None:
    called.append("decide")
    if not decision.approved:
        raise SagaRejected(f"refused by {decision.by}")
    saga.approved_by = decision.by


#: a configurable onboarding: what a settings file or a plugin list would give
CONFIG: list[dict[str, Any]] = [
    {"name": "reserve", "undo": "release", "timeout": 5, "retry": 2},
    {"name": "check", "readonly": True, "when": True},
    {"wait": "decision"},
    {"name": "charge", "undo": "refund", "undo_timeout": 10, "undo_retry": 3},
    {"name": "ship", "pivot": True},
    {"name": "notify", "retriable": True},
]


def build(config: list[dict[str, Any]] = CONFIG, name: str = "onboarding") -> type[Onboarding]:
    """The saga of ``config``, built as an application would build it at start-up."""
    builder = SagaBuilder(name, data=Onboarding, key="user")
    for item in config:
        if "wait" in item:
            builder.wait(
                item["wait"], decide, payload=Decision, timeout=timedelta(days=3),
                when=needs_approval, name="approval",
            )
            continue
        options: dict[str, Any] = {}
        if "undo" in item:
            options["compensate"] = action(item["undo"])
        for kind in ("readonly", "pivot", "retriable"):
            if item.get(kind):
                options[kind] = True
        if "timeout" in item:
            options["timeout"] = item["timeout"]
        if "retry" in item:
            options["retry"] = Retry(attempts=item["retry"])
        if item.get("when"):
            options["when"] = needs_approval
        if "undo_timeout" in item:
            options["compensate_timeout"] = timedelta(seconds=item["undo_timeout"])
        if "undo_retry" in item:
            options["compensate_retry"] = Retry(attempts=item["undo_retry"])
        builder.step(action(item["name"]), **options)
    return builder.build()


Built = build()


@saga(name="onboarding", key="user")
class Decorated(Onboarding):
    """The same saga, written with the decorators."""

    @step(timeout=5, retry=Retry(attempts=2))
    def reserve(self, ctx):
        act("reserve", ctx)

    @reserve.compensate
    def release(self, ctx):
        act("release", ctx)

    @step(readonly=True, when=needs_approval)
    def check(self, ctx):
        act("check", ctx)

    @wait("decision", payload=Decision, timeout=timedelta(days=3), when=needs_approval)
    def approval(self, decision, ctx):
        decide(self, decision, ctx)

    @step
    def charge(self, ctx):
        act("charge", ctx)

    @charge.compensate(timeout=10, retry=Retry(attempts=3))
    def refund(self, ctx):
        act("refund", ctx)

    @step(pivot=True)
    def ship(self, ctx):
        act("ship", ctx)

    @step(retriable=True)
    def notify(self, ctx):
        act("notify", ctx)


# --- the same spec ----------------------------------------------------------------------


def test_the_built_saga_has_the_decorated_sagas_spec_machine_and_fingerprint():
    built, decorated = spec_of(Built), spec_of(Decorated)
    assert built.fingerprint == decorated.fingerprint
    assert built.name == "onboarding" and built.key == "user"
    assert set(built.machine.states) == set(decorated.machine.states)
    assert built.transitions == decorated.transitions
    assert built.pivot_index == decorated.pivot_index == 4
    assert built.signals == decorated.signals == {"decision": (2,)}
    for b, d in zip(built.steps, decorated.steps, strict=True):
        same = ("index", "name", "kind", "timeout", "retry", "is_async", "compensation_name",
                "compensation_timeout", "compensation_retry", "guard_name", "wait")
        assert {k: getattr(b, k) for k in same} == {k: getattr(d, k) for k in same}
    assert [s.kind for s in built.steps] == [
        StepKind.COMPENSATABLE, StepKind.READONLY, StepKind.READONLY,
        StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE,
    ]
    assert built.step("charge").compensation_timeout == 10.0  # a timedelta, as seconds
    assert issubclass(Built, Onboarding) and spec_of(Built()) is built


def test_the_diagrams_are_the_decorated_sagas():
    assert to_dot(Built) == to_dot(Decorated)
    assert to_mermaid(Built) == to_mermaid(Decorated)
    assert "approval" in to_dot(Built) and "refund" in to_mermaid(Built)
    svg = render(Built, "svg")
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "notify" in svg
    # a run's position, drawn the same way
    FAIL.add("charge")
    built_run = Orchestrator().run(Built(), "d1")
    FAIL.add("charge")
    decorated_run = Orchestrator().run(Decorated(), "d1")
    assert to_dot(Built, saga=built_run) == to_dot(Decorated, saga=decorated_run)


def test_the_fingerprint_follows_the_configuration_not_the_functions():
    assert spec_of(build()).fingerprint == spec_of(Built).fingerprint  # built again
    changed = [dict(item) for item in CONFIG]
    changed[3] = {"name": "charge", "pivot": True}
    changed[4] = {"name": "ship", "retriable": True}
    assert spec_of(build(changed)).fingerprint != spec_of(Built).fingerprint


# --- the same runs ----------------------------------------------------------------------


def outcome(result) -> tuple:
    return (
        result.status,
        [(s.name, s.status, s.compensation) for s in result.steps],
        result.path,
        type(result.error).__name__,
    )


@pytest.mark.parametrize(
    "fail, log",
    [
        (set(), ["reserve", "charge", "ship", "notify"]),
        ({"charge"}, ["reserve", "charge", "release"]),
        ({"ship"}, ["reserve", "charge", "ship", "refund", "release"]),
    ],
    ids=["success", "charge-fails", "pivot-fails"],
)
def test_runs_match_the_decorated_saga(drive, fail, log):
    results = []
    for cls in (Built, Decorated):
        called.clear()
        FAIL.update(fail)
        results.append(drive(Orchestrator(), cls(), "r1"))
        assert log == called
    built, decorated = results
    assert outcome(built) == outcome(decorated)
    assert built.step("check").status is StepStatus.SKIPPED  # its condition is false
    assert type(built.data) is Built


def test_the_testing_toolkit_takes_a_built_saga():
    @given(failure_plans(Built))
    @settings(max_examples=60, database=None)
    def sound(plan):
        called.clear()
        check_invariants(run_plan(SagaCase(Built(amount=500)), plan))

    sound()


# --- steps decided from data ------------------------------------------------------------


PLUGINS = ["crm", "mailbox", "billing", "storage"]


def plugin_saga(plugins: list[str]) -> type:
    builder = SagaBuilder("plugins-" + "-".join(plugins), data=Onboarding)
    for plugin in plugins:
        builder.step(action(f"add_{plugin}"), compensate=action(f"remove_{plugin}"))
    return builder.step(action("activate"), pivot=True).build()


@pytest.mark.parametrize("plugins", [PLUGINS[:1], PLUGINS[:3], PLUGINS])
@pytest.mark.parametrize("failing", [0, 1, -1])
def test_a_plugin_list_makes_the_steps_and_a_failure_undoes_the_plugins_added(
    plugins, failing
):
    Plugins = plugin_saga(plugins)
    assert [s.name for s in spec_of(Plugins).steps] == [*(f"add_{p}" for p in plugins), "activate"]
    assert Orchestrator().run(Plugins(), "ok").status is SagaStatus.COMPLETED
    called.clear()
    names = [*(f"add_{p}" for p in plugins), "activate"]
    broken = names[failing]
    FAIL.add(broken)
    result = Orchestrator().run(Plugins(), "bad")
    assert result.status is SagaStatus.COMPENSATED
    done = names[: names.index(broken)]
    undone = [n.replace("add_", "remove_") for n in reversed(done)]
    assert [*done, broken, *undone] == called


Plugins = plugin_saga(PLUGINS)


class Plugin:
    """A plugin object: its bound methods and the object itself are the steps."""

    def __init__(self, name: str) -> None:
        self.name = name

    def install(self, saga: Any, ctx: Any) -> None:
        act(f"install_{self.name}", ctx)

    async def uninstall(self, saga: Any, ctx: Any) -> None:
        act(f"uninstall_{self.name}", ctx)

    def __call__(self, saga: Any, ctx: Any) -> None:
        act(f"check_{self.name}", ctx)


def test_bound_methods_callable_objects_and_async_functions_are_steps():
    builder = SagaBuilder("objects", data=Onboarding)
    for plugin in (Plugin("a"), Plugin("b")):
        builder.step(plugin.install, name=f"install_{plugin.name}", compensate=plugin.uninstall)
        builder.step(plugin, name=f"check_{plugin.name}", readonly=True)
    Objects = builder.step(action("go"), pivot=True).build()
    spec = spec_of(Objects)
    assert spec.is_async and spec.step("install_a").compensation_name == "uninstall"
    FAIL.add("go")
    result = asyncio.run(Orchestrator().arun(Objects()))
    assert result.status is SagaStatus.COMPENSATED
    assert called == ["install_a", "check_a", "install_b", "check_b", "go",
                   "uninstall_b", "uninstall_a"]


# --- bad input --------------------------------------------------------------------------


def ok(saga, ctx):
    pass


def undo(saga, ctx):
    pass


def one_arg(saga):
    pass


@attrs.define
class Fields:
    user: str = ""


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: SagaBuilder("s", data=Fields), "the builder has no steps: add at least one"),
        (lambda: SagaBuilder("s", data=Fields).step(3, readonly=True),
         "step #1 is a int (3), not a function: pass a function def name(saga, ctx)"),
        (lambda: SagaBuilder("s", data=Fields).step(one_arg, readonly=True),
         "step #1 must take (saga, ctx); its signature is (saga)"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, readonly=True).step(ok, readonly=True),
         "step #2: the name 'ok' is already taken by an earlier step: give each step its "
         "own name with name="),
        (lambda: SagaBuilder("s", data=Fields).step(ok, name="user", readonly=True),
         "step #1: the name 'user' is a field of the data class Fields: name the step "
         "otherwise with name="),
        (lambda: SagaBuilder("s", data=Fields).step(lambda s, c: None, readonly=True),
         "step #1: the function's name '<lambda>' is no step name"),
        (lambda: SagaBuilder("s", data=Fields).step(ok),
         "step 'ok' has no compensation and no kind: pass compensate="),
        (lambda: SagaBuilder("s", data=Fields).step(ok, pivot=True).step(undo, pivot=True),
         "step 'undo' is a second pivot after 'ok': a saga has at most one point of no return"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, pivot=True)
         .step(undo, name="late", compensate=undo),
         "step 'late' is compensatable but comes after 'ok': compensatable and readonly "
         "steps go before the pivot; move it up or make it retriable=True"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, compensate=undo, pivot=True),
         "step 'ok' is pivot and has a compensation"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, compensate=3),
         "the compensation of step 'ok' is a int (3), not a function"),
        (lambda: SagaBuilder("s", data=dict).step(ok, readonly=True),
         "data must be an attrs class holding the saga's fields, got <class 'dict'>: "
         "declare one with @attrs.define"),
        (lambda: SagaBuilder("s", data=Decorated).step(ok, readonly=True),
         "data Decorated already has steps (it is a saga class)"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, readonly=True, retry=3),
         "step 'ok': retry must be a sagaflow.Retry, got 3: use retry=Retry(attempts=3)"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, readonly=True, timeout=-1),
         "step 'ok': timeout must be a number of seconds > 0 or None, got -1"),
        (lambda: SagaBuilder("s", data=Fields).wait("go", ok, timeout=None),
         "wait 'ok' has no timeout, and a wait never waits for ever"),
        (lambda: SagaBuilder("s", data=Fields).wait("go", ok, payload=Decision, timeout=9),
         "wait #1 must take (saga, payload, ctx); its signature is (saga, ctx)"),
        (lambda: SagaBuilder("s", data=Fields).timer(ok),
         "timer 'ok': give exactly one of after="),
        (lambda: SagaBuilder("s", data=Fields, key="nope").step(ok, readonly=True),
         "@saga(key='nope') must name one of the saga's fields (user)"),
        (lambda: SagaBuilder("s", data=Fields).step(ok, name="failed", readonly=True),
         "step 'failed': the name is reserved for the state machine"),
    ],
)
def test_bad_input_is_refused_naming_the_problem_and_the_fix(make, expected):
    with pytest.raises(SagaDefinitionError) as caught:
        make().build()
    assert caught.value.saga == "s"
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once():
    with pytest.raises(SagaDefinitionError) as caught:
        (
            SagaBuilder("many", data=Fields)
            .step(3, name="broken", readonly=True)
            .step(ok, compensate=undo)
            .step(ok, readonly=True)
            .step(undo, pivot=True)
            .step(one_arg, name="second", pivot=True)
            .step(undo, name="late", compensate=undo, timeout="soon")
            .build()
        )
    problems = caught.value.problems
    assert len(problems) == 6, problems
    assert problems[0].startswith("step #1 is a int (3), not a function")
    assert problems[1].startswith("step #3: the name 'ok' is already taken")
    assert problems[2].startswith("step #5 must take (saga, ctx)")
    joined = "\n".join(problems)
    assert "step 'late': timeout must be a number of seconds" in joined
    assert "step 'second' is a second pivot after 'undo'" in joined
    assert "step 'late' is compensatable but comes after 'undo'" in joined
    assert str(caught.value).startswith("saga 'many' has 6 definition problems:")


def test_a_builder_builds_once_and_refuses_changes_after():
    builder = SagaBuilder("once", data=Fields).step(ok, readonly=True)
    built = builder.build()
    assert builder.build() is built
    with pytest.raises(SagaDefinitionError, match="already built into once, which a step"):
        builder.step(undo, readonly=True)
    with pytest.raises(SagaDefinitionError, match="make a new SagaBuilder"):
        builder.timer(undo, after=1)
    assert [s.name for s in spec_of(builder.build()).steps] == ["ok"]


def test_the_decorators_keep_nothing_of_a_build_for_a_later_class_body():
    def made_for(fn):
        return [d for ds in definition._made_for.values() for d in ds if d.fn is fn]

    def mine(saga, ctx):
        pass

    SagaBuilder("kept", data=Fields).step(mine, compensate=undo).build()
    with pytest.raises(SagaDefinitionError):
        SagaBuilder("broken", data=Fields).step(mine).build()
    assert made_for(mine) == [] and made_for(undo) == []


def test_the_built_class_belongs_to_the_module_that_builds_it():
    @attrs.define
    class Elsewhere:
        user: str = ""

    Elsewhere.__module__ = "models"
    built = SagaBuilder("my saga-v2", data=Elsewhere).step(ok, readonly=True).build()
    assert built.__module__ == __name__ and built.__qualname__ == "my_saga_v2"
    named = SagaBuilder("s", data=Elsewhere, module="app.sagas").step(ok, readonly=True)
    assert named.build().__module__ == "app.sagas"


# --- waits and timers -------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def orch(request, tmp_path):
    store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "w.db")
    with Orchestrator(store, clock=VirtualClock(), sagas=[Built]) as o:
        yield o
    close = getattr(store, "close", None)
    if close is not None:
        close()


def test_a_built_wait_parks_and_a_signal_by_business_key_resumes_it(orch):
    parked = orch.run(Built(user="ann", amount=500), "w1")
    assert parked.outcome == "waiting" and parked.step("approval").status is StepStatus.WAITING
    assert called == ["reserve", "check"]
    assert orch.find("ann", Built, "decision") == "w1"
    done = orch.signal("w1", "decision", Decision(True, "bob"))
    assert done.status is SagaStatus.COMPLETED and done.data.approved_by == "bob"
    assert called == ["reserve", "check", "decide", "charge", "ship", "notify"]


def test_a_rejection_at_a_built_wait_compensates(orch):
    orch.run(Built(amount=500), "w2")
    result = orch.signal("w2", "decision", {"approved": False, "by": "eve"})
    assert result.status is SagaStatus.COMPENSATED and result.outcome == "rejected"
    assert called == ["reserve", "check", "decide", "release"]


def cooled(saga, ctx):
    called.append("cooled")


def cooling() -> type:
    return (
        SagaBuilder("cooling", data=Onboarding)
        .step(action("reserve"), compensate=action("release"))
        .timer(cooled, after=timedelta(hours=1))
        .step(action("ship"), pivot=True)
        .build()
    )


def test_a_built_timer_fires_from_a_fresh_orchestrator_with_the_saga_rebuilt(tmp_path):
    clock = VirtualClock()
    url = f"sqlite:///{tmp_path / 'timers.db'}"
    with Orchestrator(url, clock=clock) as first:
        assert first.run(cooling()(), "t1").status is SagaStatus.RUNNING
    clock.advance(3600)
    with Orchestrator(url, clock=clock, sagas=[cooling()]) as second:  # "after a restart"
        assert second.resume_due() == {"t1": SagaStatus.COMPLETED}
    assert called == ["reserve", "cooled", "ship"]


# --- durable and recoverable by name ----------------------------------------------------


def test_a_crash_mid_way_is_recovered_by_a_fresh_orchestrator_with_the_saga_rebuilt(tmp_path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    CRASH.add("charge")
    with Orchestrator(url) as first, pytest.raises(KeyboardInterrupt):
        first.run(build()(), "c1")

    Rebuilt = build()
    assert Rebuilt is not Built
    with Orchestrator(url, sagas=[Rebuilt]) as second:
        assert second.get("c1").status is SagaStatus.RUNNING
        report = second.recover()
        assert report.resumed == {"c1": SagaStatus.COMPLETED} and report.skipped == {}
        assert type(second.get("c1").data) is Rebuilt
    assert called == ["reserve", "charge", "charge", "ship", "notify"]


def test_a_changed_configuration_is_refused_at_recovery_not_run_wrongly(tmp_path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    CRASH.add("charge")
    with Orchestrator(url) as first, pytest.raises(KeyboardInterrupt):
        first.run(Built(), "c2")
    changed = [item for item in CONFIG if item.get("name") != "check"]
    with Orchestrator(url, sagas=[build(changed)]) as second:
        report = second.recover()
        assert isinstance(report.skipped["c2"], SagaDefinitionChanged)
    assert called == ["reserve", "charge"]


PARK_IN_CHILD = """
import json, sys, test_builder
from sagaflow import Orchestrator
with Orchestrator(sys.argv[1]) as orch:
    result = orch.run(test_builder.build()(user="zoe", amount=900), "p1")
print(json.dumps([result.status.name, result.outcome, test_builder.called]))
"""


def test_a_saga_parked_by_another_process_is_resumed_here_by_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    child = subprocess.run(
        [sys.executable, "-c", PARK_IN_CHILD, url],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == ["RUNNING", "waiting", ["reserve", "check"]]

    with Orchestrator(url, sagas=[build()]) as here:
        assert here.find("zoe") == "p1"
        done = here.signal("p1", "decision", {"approved": True, "by": "ops"})
    assert done.status is SagaStatus.COMPLETED and done.data.approved_by == "ops"
    assert called == ["decide", "charge", "ship", "notify"]


def test_the_command_line_shows_a_built_saga_from_the_module_that_builds_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    FAIL.add("activate")
    with Orchestrator(url) as orch:
        assert orch.run(Plugins(), "f1").status is SagaStatus.COMPENSATED
    result = CliRunner().invoke(
        main, ["sagas", "show", "f1", "--store", url, "--import", __name__],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("saga f1 (plugins-crm-mailbox-billing-storage): COMPENSATED in ")
    assert f"fingerprint {spec_of(Plugins).fingerprint}" in text
    assert "4  add_storage  compensatable  COMPLETED  1         COMPENSATED" in text
    assert "diagram (mermaid, current state marked):\nstateDiagram-v2" in text


# --- parallel groups and fan-outs (issue 12) ----------------------------------------------


@attrs.define
class Order:
    lines: list[str] = attrs.Factory(list)


def sku(line: str) -> str:
    return line


def item_op(saga, item, ctx):
    """A fan-out's function: (saga, item, ctx)."""


def grouped_built() -> type:
    b = SagaBuilder("order", data=Order)
    b.step(ok, name="validate", readonly=True)
    book = b.group("book", limit=3, compensate="reverse")
    book.step(ok, name="reserve", compensate=undo, timeout=5, retry=Retry(3))
    book.step(ok, name="charge", compensate=undo, when=needs_approval)
    b.step(item_op, name="pick", each="lines", key=sku, limit=10,
           compensate_order="reverse", compensate=item_op)
    b.step(ok, name="confirm", pivot=True)
    b.group("tell").step(ok, name="email", retriable=True).step(ok, name="log", readonly=True)
    return b.build()


def grouped_decorated() -> type:
    @saga(name="order")
    class Decorated(Order):
        book = parallel(limit=3, compensate="reverse")
        tell = parallel()

        @step(readonly=True)
        def validate(self, ctx): ...

        @book.step(timeout=5, retry=Retry(3))
        def reserve(self, ctx): ...

        @reserve.compensate
        def undo_reserve(self, ctx): ...

        @book.step(when=needs_approval)
        def charge(self, ctx): ...

        @charge.compensate
        def undo_charge(self, ctx): ...

        @step(each="lines", key=sku, limit=10, compensate="reverse")
        def pick(self, item, ctx): ...

        @pick.compensate
        def unpick(self, item, ctx): ...

        @step(pivot=True)
        def confirm(self, ctx): ...

        @tell.step(retriable=True)
        def email(self, ctx): ...

        @tell.step(readonly=True)
        def log(self, ctx): ...

    return Decorated


def test_built_groups_and_fan_outs_are_the_decorated_ones():
    built, decorated = spec_of(grouped_built()), spec_of(grouped_decorated())
    assert built.groups == decorated.groups
    assert built.fingerprint == decorated.fingerprint
    assert [g.name for g in built.groups] == ["book", "tell"]
    assert built.transitions == decorated.transitions
    assert list(built.machine.states) == list(decorated.machine.states)
    for b, d in zip(built.steps, decorated.steps, strict=True):
        same = ("index", "name", "kind", "timeout", "retry", "group", "each", "guard_name")
        assert {k: getattr(b, k) for k in same} == {k: getattr(d, k) for k in same}
    # the compensations are named otherwise (undo here), so compare without them
    assert built.step("pick").each is not None and built.step("pick").each.key is sku


def test_the_builders_group_and_fan_out_refusals():
    b = SagaBuilder("bad", data=Order)
    g = b.group("g", limit=0)
    g.step(ok, name="a", readonly=True)
    b.step(ok, name="b", readonly=True)
    g.step(ok, name="c", readonly=True)
    b.step(ok, name="d", each="lines", readonly=True)  # takes (saga, ctx): no item
    b.group("lines")  # the data's field
    with pytest.raises(SagaDefinitionError) as info:
        b.build()
    found = "\n".join(info.value.problems)
    assert "limit must be a whole number >= 1" in found
    assert "not defined one after another (b between them)" in found
    assert "must take (saga, item, ctx)" in found
    assert "group #6: the name 'lines' is already taken by the data class Order" in found
