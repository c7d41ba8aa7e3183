"""Built-in kinds for actor-critic RL: an `mlp` torso and the `actor_critic` policy head.

CleanRL's ppo.py network split into processes (docs/rl.md): an actor torso and a critic
torso (`mlp`, each obs -> 64 -> 64 with tanh) feed one `actor_critic` head agent that holds
the two output layers (action logits, state value).  The links into the head are DNI links,
so each torso learns from a synthetic gradient of its activation; the head computes the PPO
(or A2C) loss from the rollout rows the `env` agent sends as context.

Acting: on an acting step the head samples an action from ``Categorical(logits)`` and
answers the env with one row ``[action, log-prob, value]`` per environment (`act`).

Initialisation is CleanRL's `layer_init`: orthogonal weights with gain sqrt(2) and zero
biases, except the actor's output (gain 0.01) and the critic's (gain 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...environments.rollout import ACTION, ADVANTAGE, LOGPROB, RETURN, VALUE
from ..base import REQUIRED, Agent, Shape
from ..errors import ParamError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
ALGORITHMS = ("ppo", "a2c")


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """CleanRL's `layer_init`: orthogonal weights of this gain, constant bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLP(Agent):
    """A stack of Linear -> activation layers (`sizes` lists their widths): a policy's torso.

    Parameters: `sizes` (e.g. [64, 64]), `activation` ("tanh" or "relu"), `init`
    ("orthogonal", CleanRL's, or "default", torch's).
    """

    kind = "mlp"
    defaults = {"sizes": REQUIRED, "activation": "tanh", "init": "orthogonal", "lr": None}

    def build(self, in_shapes: dict[str, Shape]):
        sizes, act = self.params["sizes"], self.params["activation"]
        if not sizes or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes):
            raise ParamError("sizes", f"must be a non-empty list of positive widths, got {sizes!r}")
        if act not in ACTIVATIONS:
            raise ParamError("activation", f"must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        if self.params["init"] not in ("orthogonal", "default"):
            raise ParamError(
                "init", f"must be 'orthogonal' or 'default', got {self.params['init']!r}"
            )
        shape = in_shapes["in"]
        if len(shape) != 1:
            raise ParamError("sizes", f"an mlp takes flat inputs, got shape {tuple(shape)}")
        layers: list[nn.Module] = []
        fan_in = shape[0]
        for width in sizes:
            linear = nn.Linear(fan_in, width)
            layers += [
                layer_init(linear) if self.params["init"] == "orthogonal" else linear,
                ACTIVATIONS[act](),
            ]
            fan_in = width
        return nn.Sequential(*layers), {"out": (fan_in,)}


class ActorCriticModule(nn.Module):
    """The two output layers: actor features -> action logits, critic features -> value."""

    mode_free = True  # no train/eval difference: acting steps skip the mode switch (stepper.py)

    def __init__(self, actor_width: int, critic_width: int, actions: int) -> None:
        super().__init__()
        self.actor = layer_init(nn.Linear(actor_width, actions), gain=0.01)
        self.critic = layer_init(nn.Linear(critic_width, 1), gain=1.0)

    def forward(
        self, actor: torch.Tensor, critic: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(actor), self.critic(critic).squeeze(-1)


class ActorCritic(Agent):
    """Policy and value heads with the PPO or A2C loss; answers acting steps with actions.

    Ports: `actor` and `critic` (the torsos' features, ``[B, width]``), context `rollout`
    (``[B, 5]`` rows of environments/rollout.py's `ROLLOUT_COLUMNS`), output `action`
    (``[B, 3]``: action, log-probability, value), linked back to the `env` agent.

    Parameters (CleanRL's names and defaults): `algo` ("ppo": clipped surrogate; "a2c":
    the plain policy gradient ``-A log pi``), `actions` (0: the env's count, filled in by the
    planner), `clip_coef`, `clip_vloss`, `norm_adv`, `ent_coef`, `vf_coef`.
    """

    kind = "actor_critic"
    inputs = ("actor", "critic")
    outputs = ("action",)
    context_inputs = ("rollout",)
    terminal = True
    defaults = {
        "algo": "ppo",
        "actions": 0,
        "clip_coef": 0.2,
        "clip_vloss": True,
        "norm_adv": True,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "lr": None,
    }

    def build(self, in_shapes: dict[str, Shape]):
        if self.params["algo"] not in ALGORITHMS:
            raise ParamError(
                "algo", f"must be one of {list(ALGORITHMS)}, got {self.params['algo']!r}"
            )
        for key in ("clip_coef", "ent_coef", "vf_coef"):
            value = self.params[key]
            if not value >= 0 or (key == "clip_coef" and value == 0):
                raise ParamError(
                    key,
                    f"must be {'positive' if key == 'clip_coef' else 'at least 0'}, got {value}",
                )
        if self.params["actions"] < 1:
            raise ParamError(
                "actions",
                "must be the number of actions (the planner fills it in from the env agent it answers)",
            )
        for port in self.inputs:
            if len(in_shapes[port]) != 1:
                raise ParamError(
                    port, f"port {port} takes flat features, got shape {tuple(in_shapes[port])}"
                )
        module = ActorCriticModule(
            in_shapes["actor"][0], in_shapes["critic"][0], self.params["actions"]
        )
        return module, {"action": (3,)}

    def forward(self, inputs):
        logits, value = self.module(inputs["actor"], inputs["critic"])
        return {"logits": logits, "value": value}

    def act(self, outputs):
        """An acting step's answer: an action sampled from ``softmax(logits)``, its
        log-probability, the value.  The arithmetic of ``Categorical(logits)`` written out:
        the distribution object's construction and argument checks cost more than the
        network on CartPole (about 165 of 230 us of acting, measured)."""
        logp = F.log_softmax(outputs["logits"], -1)
        action = torch.multinomial(logp.exp(), 1)
        return {
            "action": torch.cat(
                [action.to(torch.float32), logp.gather(1, action), outputs["value"][:, None]], 1
            )
        }

    def loss(self, outputs, context):
        p = self.params
        rows = context["rollout"]
        return policy_loss(
            outputs["logits"],
            outputs["value"],
            rows[:, ACTION].long(),
            rows[:, LOGPROB],
            rows[:, ADVANTAGE],
            rows[:, RETURN],
            rows[:, VALUE],
            algo=p["algo"],
            clip_coef=p["clip_coef"],
            clip_vloss=p["clip_vloss"],
            norm_adv=p["norm_adv"],
            ent_coef=p["ent_coef"],
            vf_coef=p["vf_coef"],
        )


def policy_loss(
    logits,
    values,
    actions,
    old_logprobs,
    advantages,
    returns,
    old_values,
    *,
    algo="ppo",
    clip_coef=0.2,
    clip_vloss=True,
    norm_adv=True,
    ent_coef=0.01,
    vf_coef=0.5,
):
    """One minibatch's actor-critic loss and its CleanRL-named statistics.

    PPO (Schulman et al. 2017, eq. 7 and 9; CleanRL's ppo.py): ``max(-A r, -A clip(r, 1-e,
    1+e))`` with ``r = pi(a|s) / pi_old(a|s)``, a value loss ``0.5 (V - R)^2`` (clipped
    around the old value when `clip_vloss`), minus `ent_coef` times the entropy.  A2C (Mnih
    et al. 2016): ``-A log pi(a|s)`` in place of the clipped surrogate, no value clipping.
    Advantages are normalised per minibatch when `norm_adv`.

    Shapes: logits ``[B, actions]``; every other tensor ``[B]``.
    Returns: ``(loss, stats)`` with stats ``losses/policy_loss``, ``losses/value_loss``,
    ``losses/entropy``, ``losses/old_approx_kl``, ``losses/approx_kl``, ``losses/clipfrac``.
    """
    # Categorical(logits)'s log_prob and entropy, written out (see ActorCritic.act).
    logp_all = F.log_softmax(logits, -1)
    logprob = logp_all.gather(1, actions[:, None]).squeeze(1)
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    logratio = logprob - old_logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    if norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    if algo == "a2c":
        pg_loss = -(advantages * logprob).mean()
        v_loss = 0.5 * ((values - returns) ** 2).mean()
    else:
        pg_loss = torch.max(
            -advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
        ).mean()
        if clip_vloss:
            clipped = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
            v_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
        else:
            v_loss = 0.5 * ((values - returns) ** 2).mean()
    loss = pg_loss - ent_coef * entropy + vf_coef * v_loss
    stats = {
        "losses/policy_loss": pg_loss.item(),
        "losses/value_loss": v_loss.item(),
        "losses/entropy": entropy.item(),
        "losses/old_approx_kl": float(old_approx_kl),
        "losses/approx_kl": float(approx_kl),
        "losses/clipfrac": float(clipfrac),
    }
    return loss, stats
