"""Topologies of the feed-forward paper benchmark, written as TOML for `synthgrad run`.

One function per network family (the paper's FCN, its CNN) and one table of link settings per
method.  The settings are the ones paper.md and our own runs found to work for each method; a
method is not tuned against another's budget:

  none      no gradient crosses any link: only the classifier learns (lr 3e-4)
  backprop  locked backprop across processes (lr 3e-4, paper.md's reference)
  dni       synthetic gradients without the label: a linear SG model at the *pre-activation*
            boundary (each layer ends at its batch norm, the ReLU opens the next module);
            lr 3e-4.  At the post-ReLU boundary the same SG gave 91.4% (docs/results.md).
  cdni      a linear SG model on [h, one-hot label] at the usual post-ReLU boundary; lr 1e-3
            (paper.md's reference: the best SG for cDNI is linear)
  unlocked  cDNI plus a synthetic-input model per layer (x -> 256 -> input), lr 1e-3

A topology is a plain string so that each arm's run directory keeps the exact file it ran.
"""

from __future__ import annotations

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


def _run_table(name: str, steps: int, eval_every: int, lr: float, seed: int, batch: int) -> str:
    return (
        f'[run]\nname = "{name}"\nsteps = {steps}\nbatch_size = {batch}\n'
        f"eval_every = {eval_every}\neval_batch_size = 2000\nseed = {seed}\nlr = {lr}\n"
        # The benchmark reads progress from metrics.jsonl; reports every 0.25 s are cheap.
        "metrics_every_s = 0.25\n\n"
    )


def _link(src: str, dst: str, mode: str, context: bool, model: str, extra: str = "") -> str:
    text = f'[[links]]\nfrom = "{src}"\nto = "{dst}"\nmode = "{mode}"\n'
    if mode in ("dni", "unlocked"):
        text += f'sg = {{ model = "{model}", context = {str(context).lower()} }}\n'
    return text + extra + "\n"


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
    text = _run_table(name, steps, eval_every, lr if lr is not None else setting["lr"], seed, batch)
    text += f'[agents.source]\nkind = "source"\ndataset = "{dataset}"\n\n'
    pre = setting["pre_activation"]
    for i, agent in enumerate(hidden):
        text += f'[agents.{agent}]\nkind = "dense"\nwidth = {width}\n'
        if pre:
            text += 'activation = "none"\n' + ('input_activation = "relu"\n' if i else "")
        text += "\n"
    text += (
        '[agents.head]\nkind = "head"\nclasses = 10\n'
        + ('input_activation = "relu"\n' if pre else "")
        + "\n"
    )
    sparse = f"p_update = {p_update}\n" if p_update is not None else ""
    text += _link("source.x", hidden[0], "none", False, "linear", sparse)
    for src, dst, method in zip(hidden, [*hidden[1:], "head"], methods, strict=True):
        m = METHODS[method]
        text += _link(src, dst, m["mode"], m["context"], "linear", sparse)
    text += _link("source.y", "head.labels", "none", False, "linear")
    return text


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
    text = _run_table(name, steps, eval_every, m["lr"], seed, batch)
    text += f'[agents.source]\nkind = "source"\ndataset = "{dataset}"\nflatten = false\n\n'
    text += '[agents.c1]\nkind = "conv"\nchannels = 16\nkernel = 5\n\n'
    text += '[agents.c2]\nkind = "conv"\nchannels = 32\nkernel = 5\n\n'
    text += '[agents.head]\nkind = "head"\nclasses = 10\n\n'
    text += _link("source.x", "c1", "none", False, "conv")
    for src, dst in (("c1", "c2"), ("c2", "head")):
        text += _link(src, dst, m["mode"], m["context"], "conv")
    text += _link("source.y", "head.labels", "none", False, "conv")
    return text
