"""Topologies of the feed-forward paper benchmark, written as TOML for `synthgrad run`.

One function per network family (the paper's FCN, its CNN) and one table of link settings per
method.  The settings are the ones the paper and our own runs (docs/results.md) found to
work for each method; a method is not tuned against another's budget:

  none      no gradient crosses any link: only the classifier learns (lr 3e-4)
  backprop  locked backprop across processes (lr 3e-4, as in our single-process reference runs)
  dni       synthetic gradients without the label: a linear SG model at the *pre-activation*
            boundary (each layer ends at its batch norm, the ReLU opens the next module);
            lr 3e-4.  At the post-ReLU boundary the same SG gave 91.4% (docs/results.md).
  cdni      a linear SG model on [h, one-hot label] at the usual post-ReLU boundary; lr 1e-3
            (the paper: the best SG for cDNI is linear)
  unlocked  cDNI plus a synthetic-input model per layer (x -> 256 -> input), lr 1e-3

A topology is built with synthgrad.orchestrator.builder and returned as TOML text, so that each
arm's run directory keeps the exact file it ran.
"""

from __future__ import annotations

from synthgrad.orchestrator.builder import agent, link, to_toml, topology

METHODS: dict[str, dict] = {
    "none": {"mode": "none", "lr": 3e-4, "pre_activation": False, "context": False},
    "backprop": {"mode": "backprop", "lr": 3e-4, "pre_activation": False, "context": False},
    "dni": {"mode": "dni", "lr": 3e-4, "pre_activation": True, "context": False},
    "cdni": {"mode": "dni", "lr": 1e-3, "pre_activation": False, "context": True},
    "unlocked": {"mode": "unlocked", "lr": 1e-3, "pre_activation": False, "context": True},
}
LABELS = {
    "none": "no gradient",
    "backprop": "backprop",
    "dni": "DNI",
    "cdni": "cDNI",
    "unlocked": "complete unlock",
}


def _run_table(name: str, steps: int, eval_every: int, lr: float, seed: int, batch: int) -> dict:
    return {
        "name": name,
        "steps": steps,
        "batch_size": batch,
        "eval_every": eval_every,
        "eval_batch_size": 2000,
        "seed": seed,
        "lr": lr,
        # The benchmark reads progress from metrics.jsonl; reports every 0.25 s are cheap.
        "metrics_every_s": 0.25,
    }


def _link(src: str, dst: str, mode: str, context: bool, model: str, **extra) -> dict:
    sg = {"model": model, "context": context} if mode in ("dni", "unlocked") else None
    return link(src, dst, mode, sg, **extra)


def fcn(
    name: str,
    layers: int,
    methods: list[str],
    *,
    steps: int,
    eval_every: int,
    width: int = 256,
    dataset: str = "mnist",
    p_update: float | None = None,
    seed: int = 0,
    batch: int = 256,
    lr: float | None = None,
) -> str:
    """An FCN of `layers` layers (layers-1 dense layers of `width` and the classifier).

    `methods` gives one method per link between modules (layers-1 of them: l1->l2, ...,
    last->head); the run takes its lr and the boundary from the first SG method in the list
    (else the first method), so a chain that mixes backprop with one DNI link trains as DNI.
    `p_update` applies to every trainable agent (the paper's sparse updates).
    """
    if len(methods) != layers - 1:
        raise ValueError(
            f"an FCN of {layers} layers has {layers - 1} links, got {len(methods)} methods"
        )
    lead = next((m for m in methods if m in ("dni", "cdni", "unlocked")), methods[0])
    setting = METHODS[lead]
    hidden = [f"l{i}" for i in range(1, layers)]
    run = _run_table(name, steps, eval_every, lr if lr is not None else setting["lr"], seed, batch)
    agents = {"source": agent("source", dataset=dataset)}
    pre = setting["pre_activation"]
    for i, layer in enumerate(hidden):
        agents[layer] = agent("dense", width=width)
        if pre:
            agents[layer]["activation"] = "none"
            if i:
                agents[layer]["input_activation"] = "relu"
    agents["head"] = agent("head", classes=10, **({"input_activation": "relu"} if pre else {}))
    sparse = {"p_update": p_update} if p_update is not None else {}
    links = [_link("source.x", hidden[0], "none", False, "linear", **sparse)]
    for src, dst, method in zip(hidden, [*hidden[1:], "head"], methods, strict=True):
        m = METHODS[method]
        links.append(_link(src, dst, m["mode"], m["context"], "linear", **sparse))
    links.append(_link("source.y", "head.labels", "none", False, "linear"))
    return to_toml(topology(agents, links, run=run))


def cnn(
    name: str,
    method: str,
    *,
    dataset: str,
    steps: int,
    eval_every: int,
    seed: int = 0,
    batch: int = 256,
) -> str:
    """The paper's small CNN (examples/mnist_cnn_cdni.toml): two 5x5 conv layers and a classifier.

    DNI and cDNI use a convolutional SG model (one zero-initialised 5x5 convolution, the conv
    analogue of a linear SG); cDNI adds 10 label planes to its input.
    """
    m = METHODS[method]
    agents = {
        "source": agent("source", dataset=dataset, flatten=False),
        "c1": agent("conv", channels=16, kernel=5),
        "c2": agent("conv", channels=32, kernel=5),
        "head": agent("head", classes=10),
    }
    links = [_link("source.x", "c1", "none", False, "conv")]
    for src, dst in (("c1", "c2"), ("c2", "head")):
        links.append(_link(src, dst, m["mode"], m["context"], "conv"))
    links.append(_link("source.y", "head.labels", "none", False, "conv"))
    run = _run_table(name, steps, eval_every, m["lr"], seed, batch)
    return to_toml(topology(agents, links, run=run))
