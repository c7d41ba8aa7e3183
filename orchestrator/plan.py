"""From a validated topology to what each agent needs: kinds, ports, shapes and link specs.

Planning resolves every kind, checks parameters and ports against the kind's declarations,
propagates shapes from the source through the modules (so SG models are sized before any
process starts), and adds the context routes cDNI needs: a link conditioned on labels makes
the source send its labels to the agent hosting that SG model.  Each agent gets an
`AgentPlan` (protocol/plan.py), whose wire form travels in the welcome message.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field

from ..agents.base import REQUIRED, Source, missing_params
from ..agents.registry import UnknownKind, resolve_kind
from ..protocol.plan import AgentPlan, LinkMode, LinkPlan
from .config import MAX_COUNT, ConfigError, Topology, unknown_key

DATA_PORT = "data"  # where an unlocked layer takes the source's x (agents/runtime/synthetic_input.py)

COMMON_PARAMS = ("lr", "p_update")  # accepted by every module kind


@dataclass
class RunPlan:
    """The planned run: one `AgentPlan` per agent, plus the names the supervisor needs."""

    topology: Topology
    agents: dict[str, AgentPlan] = field(default_factory=dict)
    classes: dict[str, type] = field(default_factory=dict)
    source: str = ""
    terminals: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    #: what one of the source's steps is worth in samples: its batch, or 1 for an env agent
    #: (whose steps are environment steps)
    samples_per_step: int = 1
    #: the run has an env agent (reinforcement learning, docs/rl.md)
    closed_loop: bool = False


def agent_seed(run_seed: int, name: str) -> int:
    """A per-agent seed: runs with one seed are reproducible, agents differ from each other."""
    return (run_seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def _resolve(topology: Topology) -> dict[str, type]:
    classes = {}
    for name, spec in topology.agents.items():
        try:
            classes[name] = resolve_kind(spec.kind)
        except UnknownKind as err:
            raise ConfigError(f"agents.{name}.kind", str(err)) from None
        cls = classes[name]
        allowed = set(cls.defaults) | (set() if issubclass(cls, Source) else set(COMMON_PARAMS))
        unknown = sorted(set(spec.params) - allowed)
        if unknown:
            raise unknown_key(f"agents.{name}", unknown[0], allowed, f"parameter of kind {spec.kind!r}")
        missing = missing_params(cls, spec.params)
        if missing:
            raise ConfigError(f"agents.{name}.{missing[0]}", f"kind {spec.kind!r} requires this parameter")
        _check_param_types(f"agents.{name}", cls, spec.params)
    return classes


def _check_param_types(where: str, cls: type, params: dict) -> None:
    """A kind declares each parameter's type by its default: a value of another type is
    refused here, never coerced (`width = "32"`, `2.5` or `true` for an integer; `nan` for a
    rate).  Ranges beyond "a count is 0..MAX_COUNT" are the kind's to check when it builds;
    a parameter whose default is None or REQUIRED is checked by the kind alone."""
    for key, value in params.items():
        default = cls.defaults.get(key)
        at = f"{where}.{key}"
        if key == "lr" and value is not None:
            default = 1.0  # COMMON_PARAMS: the agent's own learning rate, a positive number
        if isinstance(default, bool):
            ok, what = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
            if ok and not 0 <= value <= MAX_COUNT:
                raise ConfigError(at, f"must be in 0..{MAX_COUNT:,}, got {value}")
        elif isinstance(default, float):
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
            if ok and not math.isfinite(value):
                raise ConfigError(at, f"must be a finite number, got {value}")
            if ok and key == "lr" and value <= 0:
                raise ConfigError(at, f"must be positive, got {value}")
        elif isinstance(default, str):
            ok, what = isinstance(value, str), "a string"
        elif isinstance(default, (list, tuple)):
            ok, what = isinstance(value, list), "a list"
        else:
            continue
        if not ok:
            raise ConfigError(at, f"must be {what}, got {value!r}")


def _link_plan(link: LinkPlan, classes: dict[str, type], context: bool, ticks: dict[str, int]) -> LinkPlan:
    src_cls, dst_cls = classes[link.src], classes[link.dst]
    src_port = link.src_port or src_cls.outputs[0]
    if not link.dst_port and not (dst_cls.inputs or dst_cls.context_inputs):
        raise ConfigError(f"{link.key}.to", f"{link.dst!r} ({dst_cls.kind or dst_cls.__name__}) takes no input; a data source only sends")
    dst_port = link.dst_port or (dst_cls.inputs or dst_cls.context_inputs)[0]
    if src_port not in src_cls.outputs:
        raise ConfigError(f"{link.key}.from", f"{link.src!r} has no output port {src_port!r}; ports: {list(src_cls.outputs)}")
    if dst_port not in (*dst_cls.inputs, *dst_cls.context_inputs) and not context:
        ports = [*dst_cls.inputs, *dst_cls.context_inputs]
        raise ConfigError(f"{link.key}.to", f"{link.dst!r} has no input port {dst_port!r}; ports: {ports}")
    is_context = context or dst_port in dst_cls.context_inputs
    from_source = issubclass(src_cls, Source)
    feedback = getattr(dst_cls, "closes_loop", False)  # into an env agent: actions, no gradient
    return dataclasses.replace(
        link,
        src_port=src_port,
        dst_port=dst_port,
        # No gradient crosses a context link, nor goes back into a data source.
        mode=LinkMode.NONE if is_context or from_source or feedback else link.mode,
        context=is_context,
        from_source=from_source,
        feedback=feedback,
        src_tick=ticks[link.src],
        dst_tick=ticks[link.dst],
    )


def _order(topology: Topology, links: list[LinkPlan]) -> list[str]:
    # A feedback link (into an env agent) closes a loop by design; every other cycle is refused.
    links = [link for link in links if not link.feedback]
    indegree = {name: 0 for name in topology.agents}
    for link in links:
        indegree[link.dst] += 1
    ready = [name for name, d in indegree.items() if d == 0]
    order = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for link in links:
            if link.src == name:
                indegree[link.dst] -= 1
                if indegree[link.dst] == 0:
                    ready.append(link.dst)
    if len(order) != len(topology.agents):
        stuck = sorted(set(topology.agents) - set(order))
        raise ConfigError(
            "links",
            f"the links form a cycle through {stuck}; a loop may close only through an environment agent (kind 'env'), "
            "and recurrence belongs inside an agent",
        )
    return order


def _check_ticks(topology: Topology, instances: dict, source: str, links: list[LinkPlan]) -> None:
    """Refuse ticks that can never line up (docs/ARCHITECTURE.md, "Ticks ...")."""
    ticks = {name: spec.tick_every for name, spec in topology.agents.items()}
    slowest = math.lcm(*ticks.values())
    if slowest == 1:
        return
    if ticks[source] != 1:
        raise ConfigError(f"agents.{source}.tick_every", "a data source emits on every step; give the agents it feeds a tick instead")
    for link in links:
        src, dst = ticks[link.src], ticks[link.dst]
        if dst % src:
            raise ConfigError(
                f"agents.{link.dst}.tick_every",
                f"must be a multiple of the tick of {link.src!r} ({src}), which feeds it through {link.key}: "
                "an agent acts on whole messages of its senders, so it cannot tick faster or out of step",
            )
        if link.mode.has_synthetic_input and dst != 1:
            # Its schedule (agents/runtime/synthetic_input.py) walks every step id in order.
            raise ConfigError(f"{link.key}.mode", "'unlocked' is not available for a receiver with tick_every > 1")
    run = topology.run
    if run.epochs is not None:
        raise ConfigError("run.epochs", f"with tick_every > 1 give run.steps (a multiple of {slowest}) instead")
    if run.steps % slowest:
        raise ConfigError("run.steps", f"must be a multiple of {slowest} (the ticks' least common multiple), so every agent finishes its last block")
    if run.eval_every % slowest:
        raise ConfigError("run.eval_every", f"must be a multiple of {slowest} (the ticks' least common multiple), so evaluations start on a block")
    eval_steps = getattr(instances[source], "eval_steps", None)
    if eval_steps is None:
        raise ConfigError(
            f"agents.{source}.kind",
            f"kind {topology.agents[source].kind!r} does not say how many steps an evaluation takes, so ticks cannot line up with it",
        )
    try:
        count = eval_steps(run.eval_batch_size)
    except ValueError as err:
        raise ConfigError(f"agents.{source}.{getattr(err, 'param', 'eval_steps')}", str(err)) from None
    if count % slowest:
        raise ConfigError(f"agents.{source}.eval_steps", f"an evaluation takes {count} steps, not a multiple of {slowest} (the ticks' least common multiple)")
    # A message that covers several steps cannot be split at an episode boundary.
    episode = getattr(instances[source], "episode_length", None)
    for link in links:
        src = ticks[link.src]
        if episode and src > 1 and episode % src:
            raise ConfigError(
                f"agents.{source}.length",
                f"episodes of {episode} steps do not line up with {link.src!r}, whose messages cover {src} steps each",
            )


def _refuse_waiting_unlocked(links: list[LinkPlan]) -> None:
    # An unlocked layer finishes step s (and sends its real output) only after its update;
    # an update that waits for a gradient from downstream would wait for itself.
    unlocked = {link.dst for link in links if link.mode.has_synthetic_input}
    for link in links:
        if link.src in unlocked and not link.context:
            if link.mode.locked:
                raise ConfigError(f"{link.key}.mode", f"{link.src!r} has an unlocked input, so its outputs cannot be locked; use 'dni' or 'unlocked'")
            if link.mode.has_sg_model and link.sg.lam > 0:
                raise ConfigError(f"{link.key}.sg.lam", f"{link.src!r} has an unlocked input, so it cannot wait for true gradients (lambda > 0)")
            if link.mode.has_sg_model and not link.sg.sender_hosted:
                raise ConfigError(f"{link.key}.sg.host", f"{link.src!r} has an unlocked input, so it cannot wait for a receiver's synthetic gradient; use sg.host = 'sender'")


def _check_label_links(links: list[LinkPlan], classes: dict[str, type], source: str) -> None:
    """Class labels go from the source's label port to `labels` ports, and only there (an env
    agent's rollout rows to `rollout` ports): images on a `labels` port, or labels on a data
    input, would be refused at every step and hang the run."""
    label_port = classes[source].label_port
    port = getattr(classes[source], "context_port", "labels")
    what = "rollout rows" if port == "rollout" else "class labels"
    for link in links:
        from_labels = link.src == source and link.src_port == label_port
        if link.dst_port == port and not from_labels:
            raise ConfigError(f"{link.key}.from", f"port {link.dst}.{port} takes {what}, from {source}.{label_port}; got {link.src}.{link.src_port}")
        if from_labels and not link.context:
            raise ConfigError(f"{link.key}.to", f"{source}.{label_port} sends {what}; they go to a context port such as {link.dst}.{port}, not to {link.dst}.{link.dst_port}")


def _check_classes(topology: Topology, instances: dict, source: str, links: list[LinkPlan]) -> None:
    """An agent that classifies the source's labels needs a class for every label."""
    label_port = type(instances[source]).label_port
    have = instances[source].num_classes
    for link in links:
        classes = instances[link.dst].params.get("classes") if link.src == source and link.src_port == label_port else None
        if isinstance(classes, int) and not isinstance(classes, bool) and link.dst_port == "labels" and classes < have:
            raise ConfigError(
                f"agents.{link.dst}.classes",
                f"is {classes}, but {source!r} ({topology.agents[source].kind}) has {have} classes; give classes = {have}",
            )


def _p_update(name: str, agent_params: dict, in_links: list[LinkPlan]) -> float | None:
    """The agent's update probability: its own `p_update`, else its data in-links' option."""
    if agent_params.get("p_update") is not None:
        value = agent_params["p_update"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"agents.{name}.p_update", f"must be a number in [0, 1], got {value!r}")
        return float(value)
    found = None
    for link in in_links:
        if link.context or link.p_update is None:
            continue
        value = float(link.p_update)
        if found is not None and value != found:
            raise ConfigError(f"{link.key}.p_update", f"{name!r} already updates with p_update = {found} from another link")
        found = value
    return found


def plan_run(topology: Topology) -> RunPlan:
    """Plan a run; raises `ConfigError` naming the key of the first problem."""
    classes = _resolve(topology)
    sources = [n for n, c in classes.items() if issubclass(c, Source)]
    if len(sources) != 1:
        raise ConfigError("agents", f"a topology needs exactly one data source, found {sources or 'none'}")
    source = sources[0]
    instances = {}
    for n in topology.agents:
        try:
            instances[n] = classes[n](n, topology.agents[n].params)
        except ValueError as err:  # a kind rejecting its parameters; `param` names one if it can
            key = f"agents.{n}.{err.param}" if getattr(err, "param", None) else f"agents.{n}"
            raise ConfigError(key, str(err)) from None
    size = instances[source].train_size
    if size is not None and topology.run.batch_size > size:
        raise ConfigError("run.batch_size", f"is {topology.run.batch_size}, larger than {source!r}'s training set ({size:,} examples)")
    ticks = {n: spec.tick_every for n, spec in topology.agents.items()}
    links = [_link_plan(link, classes, False, ticks) for link in topology.links]
    seen_inputs: dict[tuple[str, str], str] = {}
    for link in links:
        key = (link.dst, link.dst_port)
        if key in seen_inputs:
            raise ConfigError(f"{link.key}.to", f"input port {key[0]}.{key[1]} is already fed by {seen_inputs[key]}")
        seen_inputs[key] = link.key
    # cDNI: whoever hosts a label-conditioned SG model needs the labels as context (from an
    # env agent: its rollout rows, on port `rollout`).
    label_port = classes[source].label_port
    context_port = getattr(classes[source], "context_port", "labels")
    for link in list(links):
        if link.mode.has_sg_model and link.sg.context:
            host = link.src if link.sg.sender_hosted else link.dst
            if (host, context_port) not in seen_inputs:
                implicit = LinkPlan(len(links), source, label_port, host, context_port, LinkMode.NONE, link.sg)
                links.append(_link_plan(implicit, classes, True, ticks))
                seen_inputs[(host, context_port)] = f"{context_port} for {link.label}"
    # Complete unlock: a layer on an unlocked link predicts its input from the data x.
    data_port = getattr(classes[source], "data_port", classes[source].outputs[0])
    for link in list(links):
        if link.mode.has_synthetic_input and (link.dst, DATA_PORT) not in seen_inputs:
            implicit = LinkPlan(len(links), source, data_port, link.dst, DATA_PORT, LinkMode.NONE, link.sg)
            links.append(_link_plan(implicit, classes, True, ticks))
            seen_inputs[(link.dst, DATA_PORT)] = f"data for {link.label}"
    _check_label_links(links, classes, source)
    _refuse_waiting_unlocked(links)
    _check_classes(topology, instances, source, links)
    run = topology.run
    closed = getattr(classes[source], "closes_loop", False)
    if closed:
        run = _plan_closed_loop(topology, instances, source, links)
    _check_ticks(topology, instances, source, links)
    order = _order(topology, links)
    plan = RunPlan(topology=topology, classes=classes, source=source, order=order, samples_per_step=1 if closed else run.batch_size, closed_loop=closed)
    out_shapes: dict[str, dict] = {source: instances[source].output_shapes()}
    num_classes = instances[source].num_classes
    for name in order:
        spec = topology.agents[name]
        in_links = [link for link in links if link.dst == name]
        # A port that takes several messages per block sees them stacked on a new dimension.
        # (A feedback link's sender comes later in the order: `_plan_feedback` adds its shape.)
        in_shapes = {
            link.dst_port: ((n,) if (n := link.messages_per_block) > 1 else ()) + tuple(out_shapes[link.src][link.src_port])
            for link in in_links
            if not link.feedback
        }
        agent = instances[name]
        if not issubclass(classes[name], Source):
            # A terminal's context (labels, targets, masks) feeds its loss: it is required too.
            required = classes[name].inputs + (classes[name].context_inputs if classes[name].terminal else ())
            for port in required:
                if port not in in_shapes:
                    raise ConfigError("links", f"input port {name}.{port} is not fed by any link")
            try:
                _, shapes = agent.build(dict(in_shapes))
            except (ValueError, KeyError, RuntimeError) as err:
                key = f"agents.{name}.{err.param}" if getattr(err, "param", None) else f"agents.{name}"
                raise ConfigError(key, f"cannot build its module: {err}") from None
            out_shapes[name] = shapes
            if classes[name].terminal and not closed:
                plan.terminals.append(name)
        is_source = issubclass(classes[name], Source)
        plan.agents[name] = AgentPlan(
            name=name,
            kind=spec.kind,
            params={k: v for k, v in agent.params.items() if v is not REQUIRED},
            run=run,
            seed=agent_seed(topology.run.seed, name),
            tick_every=spec.tick_every,
            num_classes=num_classes,
            in_shapes=in_shapes,
            out_shapes={p: tuple(s) for p, s in out_shapes[name].items()},
            in_links=tuple(in_links),
            out_links=tuple(link for link in links if link.src == name),
            p_update=None if is_source else _p_update(name, spec.params, in_links),
        )
    if closed:
        _plan_feedback(plan, links, out_shapes)
    return plan


def _plan_closed_loop(topology: Topology, instances: dict, env: str, links: list[LinkPlan]):
    """Checks and settings of a run with an env agent (docs/rl.md); returns its RunSettings.

    The env's action port must be fed; a policy's `actions` parameter (0: filled in here)
    must be the env's action count.  Minibatches are the env's (``num_envs * num_steps /
    num_minibatches`` rows) and acting steps carry `num_envs` rows, so those become the run's
    batch sizes (what the agents' admission accepts).
    """
    rollout = instances[env].rollout_size
    if topology.run.steps is None or topology.run.steps < rollout:
        raise ConfigError(
            "run.steps",
            f"counts environment steps with an env agent; give at least one rollout of num_envs x num_steps = {rollout} (got {topology.run.steps})",
        )
    feedback = [link for link in links if link.feedback]
    if not feedback:
        raise ConfigError("links", f"input port {env}.action is not fed by any link; link the policy head's action port to it")
    for link in links:
        if link.mode.has_synthetic_input:
            raise ConfigError(f"{link.key}.mode", "'unlocked' is not available in a run with an env agent; use 'dni'")
    for name, spec in topology.agents.items():
        if spec.tick_every != 1:
            raise ConfigError(f"agents.{name}.tick_every", "ticks are not available in a run with an env agent (every agent acts on every env step)")
    actions = instances[env].num_actions
    for link in feedback:
        if link.src == env:
            raise ConfigError(f"{link.key}.from", "an env agent cannot feed itself")
    for name, agent in instances.items():
        if name == env or "actions" not in type(agent).defaults:
            continue
        given = agent.params.get("actions")
        if given in (0, None):
            agent.params["actions"] = actions
        elif given != actions:
            env_id = instances[env].params["env_id"]
            raise ConfigError(f"agents.{name}.actions", f"is {given}, but {env_id}'s action space has {actions} actions; give actions = {actions} or leave it out")
    env_agent = instances[env]
    return dataclasses.replace(topology.run, batch_size=env_agent.minibatch_size, eval_batch_size=env_agent.params["num_envs"])


def _plan_feedback(plan: RunPlan, links: list[LinkPlan], out_shapes: dict) -> None:
    """The env's action port takes ``[action, log-prob, value]`` rows; its sender's output
    must have that shape.  The env is the run's terminal: its final report ends the run."""
    env = plan.source
    in_shapes = dict(plan.agents[env].in_shapes)
    for link in links:
        if not link.feedback:
            continue
        shape = tuple(out_shapes[link.src][link.src_port])
        if shape != (3,):
            raise ConfigError(
                f"{link.key}.from",
                f"{link.src}.{link.src_port} sends shape {shape}; {env}.{link.dst_port} takes rows of (action, log-prob, value), "
                "shape (3,): link a policy head's action port (kind 'actor_critic')",
            )
        in_shapes[link.dst_port] = shape
    plan.agents[env] = dataclasses.replace(plan.agents[env], in_shapes=in_shapes)
    plan.terminals = [env]
