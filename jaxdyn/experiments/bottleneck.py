"""The simplest three-layer network: a bottleneck of width k (seed 003; see
docs/science/bottleneck.md).

Data (``make_data``, once per chunk = per data seed, shared by all its runs): x ~ N(0, I_d),
a random unit vector w* and the projections z* = w*ᵀx; labels y = g*(z*) = sin(ν·π·z*) are
computed where needed (ν is dynamic, so they are never stored). The first ``n_train`` rows
are the training set, the next ``n_val`` the validation set. The SGD minibatch order —
epochs of random permutations of the training set, cut into batches — is drawn there too,
so every run of a data seed sees the same batches (common random numbers).

``bottleneck.three_layer``: f(x) = vᵀσ(U·(Wx) + b) with W ∈ R^{k×d}, U ∈ R^{m×k}, b, v ∈ R^m
(k = 1: f(x) = vᵀσ(u·(wᵀx) + b) = g_θ(wᵀx)). SGD without momentum on ½·mean_batch (y − f)²
(static ``reduction = "mean"``, the default) or ½Σ_batch (``"sum"``, the seed's formula, with
which lr 5e-4 diverges at width 1000: the top eigenvalue of the 32-point batch NTK is ~2e4 at
init, above 2/lr = 4e3; see sweeps/README.md).
Init: LeCun normal (std 1/sqrt(fan_in)) for every weight and for the bias b (fan-in k);
variants (static ``init``): ``lecun``; ``cos`` — the first row of W is
‖g‖·(c0·w* + sqrt(1 − c0²)·o) with g a LeCun draw and o the unit vector along g's component
orthogonal to w*, so CosSim(w0, w*) = c0 exactly and ‖w0‖ is the LeCun norm; ``w_star`` —
w0 = w*. Parameter control (static ``control``): ``none``; ``freeze_w`` (w never trained:
with ``init = "w_star"`` this is pure 1-D learning); ``fix_g`` (f(x) = sin(νπ·wᵀx), only w
trained; k = 1); ``pretrain_g`` (the first ``pretrain_steps`` steps train g_θ with w = w*,
then the run continues from the w drawn at init, training everything).

Initialisation replicates: a run's ``seed`` is its *data* seed (the engine generates data
once per seed and never lets a chunk span seeds); the dynamic ``replicate`` is folded into
the init key, so runs that differ only in ``replicate`` share the data set and the batch
order and differ in their initial weights — the thesis' "only difference is in the random
initializations" — and hundreds of them share one compiled chunk.

``bottleneck.one_d``: the 1-D learner g_θ alone on z ~ N(0, 1), y = sin(νπz) (the same code
with d = 1, w = w* = ±1 frozen).

The thesis' two-parameter toy (a saddle that restriction turns into a trap) is
``toy.ring``, in :mod:`jaxdyn.experiments.toy`.

Probes (sweep ``probes`` table): ``ntk`` — relative NTK change ‖K_t − K_0‖_F / ‖K_0‖_F on the
first ``n_change`` validation points, and the extreme NTK eigenvalues on the first ``n_eig``
training points (the trained parameters' tangent kernel, computed in closed form from the
hidden features, never materialising the Jacobian); ``g_grid`` — g_θ on a fixed z-grid
(an array metric).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import optax

from jaxdyn.experiments import _checks
from jaxdyn.experiments.base import Experiment, Metric, Probe
from jaxdyn.optim import optimizer
from jaxdyn.spec import Param

INITS = ("lecun", "cos", "w_star")
CONTROLS = ("none", "freeze_w", "fix_g", "pretrain_g")
#: Rows per block when evaluating losses on the train/validation sets: bounds the activation
#: memory of a log point to (runs, EVAL_BLOCK, width) whatever n_val and n_eval are.
EVAL_BLOCK = 64


# ---- data --------------------------------------------------------------------------------
def batch_order(key, n_train: int, steps: int, batch: int) -> jax.Array:
    """(steps, batch) int32 indices into the training set: consecutive epochs, each a random
    permutation of range(n_train) (argsort of random bits), concatenated and cut into batches
    of ``batch``."""
    total = max(steps, 1) * batch
    n_ep = -(-total // n_train)
    bits = jax.random.bits(key, (n_ep, n_train), jnp.uint32)
    perms = jnp.argsort(bits, axis=1, stable=True)
    return perms.reshape(-1)[:total].reshape(max(steps, 1), batch).astype(jnp.int32)


def make_data(key, static):
    """Inputs x (n_train + n_val, d), w*, z* = x·w*, and the minibatch order; shared by every
    run of a data seed (no labels: ν is dynamic)."""
    dt = static["dtype"]
    d, n_train, n_val = static["d"], static["n_train"], static["n_val"]
    kx, ko = jax.random.split(key)
    # one draw for w* and x: every jax.random call is its own kernel to compile
    g = jax.random.normal(kx, ((n_train + n_val + 1) * d,), dt)
    w_star = g[:d] / jnp.linalg.norm(g[:d])
    x = g[d:].reshape(n_train + n_val, d)
    return {"w_star": w_star, "x": x, "z_star": x @ w_star,
            "order": batch_order(ko, n_train, static["steps"], static["batch"])}


def g_star(nu, z):
    return jnp.sin(nu * jnp.pi * z)


# ---- model -------------------------------------------------------------------------------
def g_apply(theta, z):
    """The 1-D (k-D) learner g_θ(z) = vᵀσ(U z + b) for z of shape (n, k); returns (n,)."""
    return jax.nn.relu(_pre(theta, z)) @ theta["v"]


def _pre(theta, z):
    u = theta["u"]
    if u.shape[1] == 1:  # outer product as a broadcast, not a contraction of length 1
        return z[:, :1] * u[:, 0] + theta["b"]
    return z @ u.T + theta["b"]


def forward(params, W, x, static, nu):
    """f(x) for x (n, d) with the (effective) first layer W (k, d)."""
    if static["control"] == "fix_g":
        return g_star(nu, x @ W[0])
    return g_apply(params, x @ W.T)


def effective_w(state, data, static, hp):
    """The first layer the model uses: w* during the pretraining of ``pretrain_g``."""
    W = state["params"]["w"]
    if static["control"] == "pretrain_g":
        pre = state["t"] < hp["pretrain_steps"]
        W = jnp.where(pre, data["w_star"][None, :].astype(W.dtype), W)
    return W


def _trainable(control: str) -> tuple[str, ...]:
    return {"none": ("w", "u", "b", "v"), "pretrain_g": ("w", "u", "b", "v"),
            "freeze_w": ("u", "b", "v"), "fix_g": ("w",)}[control]


def batch_loss(params, W_of, xb, yb, static, nu):
    """½ Σ_batch (y − f(x))² (``reduction = "sum"``) or ½ mean_batch (``"mean"``), with the
    first layer ``W_of(params)``."""
    r = yb - forward(params, W_of(params), xb, static, nu)
    loss = 0.5 * jnp.sum(r * r)
    return loss / xb.shape[0] if static["reduction"] == "mean" else loss


# ---- init --------------------------------------------------------------------------------
def cos_init(g, w_star, c0):
    """The LeCun-normal draw g (std 1/sqrt(d)) rotated to make cosine c0 with w*:
    ‖g‖·(c0·w* + sqrt(1−c0²)·o), o the unit vector along g − (gᵀw*)w*."""
    o = g - (g @ w_star) * w_star
    o = o / jnp.linalg.norm(o)
    c0 = jnp.asarray(c0, g.dtype)
    return jnp.linalg.norm(g) * (c0 * w_star + jnp.sqrt(jnp.maximum(1 - c0 * c0, 0)) * o)


def init_params(key, static, hp, data):
    dt = static["dtype"]
    d, m, k = static["d"], static["width"], static["k"]
    # one standard-normal draw cut into the pieces: one kernel to compile, not five
    sizes = (k * d, m * k, m, m)
    g = jax.random.normal(key, (sum(sizes),), dt)
    gw, gu, gb, gv = jnp.split(g, list(itertools.accumulate(sizes))[:-1])
    W = gw.reshape(k, d) / math.sqrt(d)
    if static["init"] == "cos":
        W = W.at[0].set(cos_init(W[0], data["w_star"].astype(dt), hp["cos0"]))
    elif static["init"] == "w_star":
        W = W.at[0].set(data["w_star"].astype(dt))
    return {"w": W,
            "u": gu.reshape(m, k) / math.sqrt(k),
            "b": gb / math.sqrt(k),
            "v": gv / math.sqrt(m)}


def init(key, static, hp, data):
    _check_static(static)  # jaxdyn.run checks first (check_three_layer); direct callers here
    ikey = jax.random.fold_in(key, hp["replicate"].astype(jnp.uint32))
    params = init_params(ikey, static, hp, data)
    train = {n: params[n] for n in _trainable(static["control"])}
    return {"params": params, "opt": optimizer(static, hp).init(train),
            "t": jnp.zeros((), jnp.int32), "key0": key}


# ---- step --------------------------------------------------------------------------------
def batch_grads(params, W, xb, yb, static, nu, want_w: bool = True):
    """Gradients of the minibatch loss (see ``batch_loss``) with respect to the first layer W
    and θ = (u, b, v), by hand: with z = Wx, pre = Uz + b, h = σ(pre), the ReLU mask
    M = 1[pre > 0], r = ∂loss/∂f and a = M ⊙ r (∂loss/∂pre up to v),

        ∂b = v ⊙ S₁,  ∂U = v ⊙ S_Z,  ∂v = hᵀ r = U ⊙ S_Z · 1 + b ⊙ S₁,  ∂W = (a (U ⊙ v))ᵀ X,

    with the two column sums S₁ = Σ_n a (m,) and S_Z = aᵀ Z (m, k). ∂v comes from them
    because h = M ⊙ pre and pre = Z Uᵀ + b, so Σ_n r_n h_nm = Σ_n a_nm pre_nm: one pass
    over the (batch, width) activations fewer, which on a CPU is most of a step's cost
    (at width 1000, batch 32, k = 1 on 2 CPU devices it sped up both the step loop alone
    and the engine's run function). Equal to ``jax.grad(batch_loss)`` (tested against
    float64 NumPy) and about twice as fast under vmap on CPU as autodiff, which reads the
    activations about twice as often. For k > 1 the sums are one product Mᵀ [r, r ⊙ Z] (a
    never formed) and ∂W comes from r ⊙ (M (U ⊙ v)): at k = 4 that roughly doubled the
    throughput; for k = 1 the fused reductions of a were faster. The measured figures are in
    benchmarks/README.md (table of changes). Returns (∂W or None, ∂θ dict)."""
    scale = 1.0 / xb.shape[0] if static["reduction"] == "mean" else 1.0
    if static["control"] == "fix_g":
        grads = jax.grad(lambda w: batch_loss(params, lambda _: w, xb, yb, static, nu))(W)
        return grads, {}
    u, b, v = params["u"], params["b"], params["v"]
    z = xb @ W.T                                      # (n, k)
    pre = _pre(params, z)                             # (n, m)
    h = jax.nn.relu(pre)
    r = (h @ v - yb) * scale                          # (n,)
    if u.shape[1] == 1:
        a = jnp.where(pre > 0, r[:, None], 0.0)       # (n, m)
        s1, sz = a.sum(0), (z[:, 0] @ a)[:, None]     # (m,), (m, 1)
        gz = a @ (u * v[:, None])                     # (n, 1)
    else:
        mask = (pre > 0).astype(pre.dtype)            # (n, m)
        s = jnp.concatenate([r[:, None], r[:, None] * z], 1).T @ mask   # (1 + k, m)
        s1, sz = s[0], s[1:].T
        gz = r[:, None] * (mask @ (u * v[:, None]))   # (n, k)
    gth = {"u": v[:, None] * sz, "b": v * s1, "v": jnp.sum(u * sz, 1) + b * s1}
    if not want_w:
        return None, gth
    return gz.T @ xb, gth


def step(state, key, static, hp, data):
    params, t = state["params"], state["t"]
    control = static["control"]
    idx = data["order"][t]
    xb = data["x"][idx]
    yb = g_star(hp["nu"], data["z_star"][idx])
    W = effective_w(state, data, static, hp)
    gW, gth = batch_grads(params, W, xb, yb, static, hp["nu"], want_w=control != "freeze_w")
    if control == "pretrain_g":  # w is not trained while g_θ learns with w = w*
        gW = jnp.where(t < hp["pretrain_steps"], jnp.zeros_like(gW), gW)
    grads = {**gth, "w": gW} if gW is not None else gth
    names = _trainable(control)
    train = {n: params[n] for n in names}
    grads = {n: grads[n] for n in names}
    opt = optimizer(static, hp)  # the sweep's optimizer (default sgd(lr)), traced
    updates, opt_state = opt.update(grads, state["opt"], train)
    new = optax.apply_updates(train, updates)
    return {"params": {**params, **new}, "opt": opt_state, "t": t + 1, "key0": state["key0"]}


# ---- measure -----------------------------------------------------------------------------
def _blocked_mse(fn, x, z_star, nu):
    """mean (g*(z*) − fn(x))² over the rows of x, EVAL_BLOCK rows at a time. The labels are
    computed inside each block: ν differs between runs, so labels of the whole set would be
    a per-run copy of the data."""
    n = x.shape[0]
    nb = -(-n // EVAL_BLOCK)
    pad = nb * EVAL_BLOCK - n
    xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    zp = jnp.concatenate([z_star, jnp.zeros((pad,), z_star.dtype)]) if pad else z_star
    wt = (jnp.arange(nb * EVAL_BLOCK) < n).astype(x.dtype)
    blocks = (xp.reshape(nb, EVAL_BLOCK, -1), zp.reshape(nb, EVAL_BLOCK),
              wt.reshape(nb, EVAL_BLOCK))

    def one(blk):
        xb, zb, wb = blk
        r = g_star(nu, zb) - fn(xb)
        return jnp.sum(wb * r * r)

    return jnp.sum(jax.lax.map(one, blocks)) / n


def cos_sim(W, w_star):
    """|CosSim(w, w*)| for k = 1; for k > 1 the norm of the projection of the unit vector w*
    onto the row space of W (1 iff w* lies in it)."""
    if W.shape[0] == 1:
        w = W[0]
        return jnp.abs(w @ w_star) / (jnp.linalg.norm(w) * jnp.linalg.norm(w_star))
    q, _ = jnp.linalg.qr(W.T)  # (d, k): orthonormal basis of the row space
    return jnp.linalg.norm(q.T @ w_star) / jnp.linalg.norm(w_star)


def _splits(static):
    n_tr = min(static["n_train"], static["n_eval"])
    return slice(0, n_tr), slice(static["n_train"], static["n_train"] + static["n_val"])


def losses(params, W, static, hp, data):
    tr, va = _splits(static)

    def fn(xb):
        return forward(params, W, xb, static, hp["nu"])

    x, z = data["x"], data["z_star"]
    return (_blocked_mse(fn, x[tr], z[tr], hp["nu"]),
            _blocked_mse(fn, x[va], z[va], hp["nu"]))


def measure(state, static, hp, data):
    W = effective_w(state, data, static, hp)
    train_loss, val_loss = losses(state["params"], W, static, hp, data)
    c = cos_sim(W, data["w_star"])
    signed = (W[0] @ data["w_star"]) / jnp.linalg.norm(W[0]) if W.shape[0] == 1 else c
    return {"train_loss": train_loss, "val_loss": val_loss, "cos_sim": c,
            "cos_signed": signed, "w_norm": jnp.linalg.norm(W)}


def train_objective(params, static, hp, data):
    """The expected SGD objective, estimated on the training rows used for train_loss
    (½·mean (y − f)², times batch for ``reduction = "sum"``), so that its sharpness compares
    with 2/lr (generic probes)."""
    W = params["w"]
    tr, _ = _splits(static)
    y = g_star(hp["nu"], data["z_star"][tr])
    r = y - forward(params, W, data["x"][tr], static, hp["nu"])
    scale = static["batch"] if static["reduction"] == "sum" else 1
    return scale * 0.5 * jnp.mean(r * r)


# ---- the NTK -----------------------------------------------------------------------------
def ntk(params, W, x, static, nu, control=None):
    """Tangent kernel K = J Jᵀ (n × n) of the outputs on x (n, d) with respect to the
    parameters ``control`` trains, in closed form. With a_i = v_i·σ'(pre_i), h = σ(pre),
    z = Wx and G = A·U (the derivative of g_θ with respect to z):

        K = H Hᵀ + (A Aᵀ) ⊙ (1 + Z Zᵀ)   [θ = (v, b, U)]   + (G Gᵀ) ⊙ (X Xᵀ)   [W]

    ``fix_g`` (f = sin(νπ wᵀx), only w): K = (c cᵀ) ⊙ (X Xᵀ) with c = νπ·cos(νπ wᵀx).
    """
    control = static["control"] if control is None else control
    xx = x @ x.T
    if control == "fix_g":
        c = nu * jnp.pi * jnp.cos(nu * jnp.pi * (x @ W[0]))
        return jnp.outer(c, c) * xx
    z = x @ W.T
    pre = _pre(params, z)
    h = jax.nn.relu(pre)
    a = (pre > 0).astype(pre.dtype) * params["v"]
    K = h @ h.T + (a @ a.T) * (1 + z @ z.T)
    if control == "freeze_w":
        return K
    g = a @ params["u"]
    return K + (g @ g.T) * xx


def _ntk_probe(exp, state, static, hp, data, opts):
    n_c, n_e = int(opts["n_change"]), int(opts["n_eig"])
    _, va = _splits(static)
    x_c = data["x"][va][:n_c]
    x_e = data["x"][:min(n_e, static["n_train"])]
    W = effective_w(state, data, static, hp)
    s0 = init(state["key0"], static, hp, data)
    W0 = effective_w(s0, data, static, hp)
    K = ntk(state["params"], W, x_c, static, hp["nu"])
    # K_0 from the re-drawn initial parameters (the state keeps its init key, not a copy of
    # its initial weights). At t = 0 the state *is* the initial state: use K itself, so that
    # the change is exactly 0 there rather than a rounding difference between two programs.
    K0 = jnp.where(state["t"] == 0, K, ntk(s0["params"], W0, x_c, static, hp["nu"]))
    ev = jnp.linalg.eigvalsh(ntk(state["params"], W, x_e, static, hp["nu"]))
    return {"ntk_change": jnp.linalg.norm(K - K0) / jnp.linalg.norm(K0),
            "ntk_min_eig": ev[0], "ntk_max_eig": ev[-1]}


def _ntk_check(exp, state, static, opts):
    for k, most in (("n_change", "n_val"), ("n_eig", "n_train")):
        if not 1 <= opts[k] <= static[most]:
            raise ValueError(f"{k} must be between 1 and {most} = {static[most]}, got "
                             f"{opts[k]}")


NTK_PROBE = Probe(
    name="ntk",
    doc="relative NTK change ‖K_t − K_0‖_F/‖K_0‖_F on the first n_change validation points "
        "(column ntk_change) and the smallest/largest NTK eigenvalue on the first n_eig "
        "training points (ntk_min_eig, ntk_max_eig); the kernel of the trained parameters",
    fn=_ntk_probe,
    defaults={"every": 1000, "n_change": 64, "n_eig": 32},
    check=_ntk_check,
)


def z_grid(opts, dtype):
    return jnp.linspace(-opts["z_max"], opts["z_max"], int(opts["n_grid"])).astype(dtype)


def _g_grid_probe(exp, state, static, hp, data, opts):
    dt = static["dtype"]
    z = z_grid(opts, dt)
    if static["control"] == "fix_g":
        g = g_star(hp["nu"], z)
    elif static["k"] == 1:
        g = g_apply(state["params"], z[:, None])
    else:  # g_θ is k-dimensional: no 1-D frame to draw
        g = jnp.full(z.shape, jnp.nan, dt)
    return {"g_grid": g}


def _g_grid_check(exp, state, static, opts):
    if opts["n_grid"] < 1:
        raise ValueError(f"n_grid must be >= 1, got {opts['n_grid']}")
    if not opts["z_max"] > 0:
        raise ValueError(f"z_max must be > 0, got {opts['z_max']}")


G_GRID_PROBE = Probe(
    name="g_grid",
    doc="g_θ(z) on linspace(−z_max, z_max, n_grid) (array column g_grid; g* for fix_g, NaN "
        "for k > 1); for frame plots against the data projected on the current w",
    fn=_g_grid_probe,
    defaults={"every": 1000, "n_grid": 41, "z_max": 3.0},
    check=_g_grid_check,
)


_COMMON_PARAMS = (
    Param("nu", 0.5, float, doc="target g*(z) = sin(ν·π·z)"),
    Param("lr", 5e-4, float,
          doc="SGD step size (no momentum) on the minibatch loss (see reduction)"),
    Param("replicate", 0, int, doc="initialisation replicate, folded into the init key: runs "
                                   "of one seed with different replicates share data and "
                                   "batch order and differ in their initial weights"),
    Param("width", 1000, int, static=True, doc="hidden width m of g_θ"),
    Param("n_train", 10000, int, static=True, doc="training samples"),
    Param("n_val", 1024, int, static=True, doc="validation samples (val_loss)"),
    Param("n_eval", 1024, int, static=True,
          doc="train_loss is the MSE on the first min(n_train, n_eval) training samples"),
    Param("batch", 32, int, static=True, doc="SGD minibatch size"),
    Param("reduction", "mean", str, static=True, choices=("mean", "sum"),
          doc="minibatch loss ½·mean_batch (y − f)² or ½·Σ_batch; with 'sum', lr 5e-4 and "
              "width 1000 SGD diverges (the batch NTK's top eigenvalue is ~2e4 > 2/lr)"),
)
_LOSS_METRICS = (
    Metric("train_loss", "mean squared error on the first min(n_train, n_eval) train samples"),
    Metric("val_loss", "mean squared error on the n_val validation samples"),
)


def _check_static(static):
    """The constraints on the static hyperparameters of ``_COMMON_PARAMS`` and of
    ``three_layer``'s (d, k, init, control); see :func:`check_three_layer`."""
    d, k, width = static["d"], static["k"], static["width"]
    n_train, batch = static["n_train"], static["batch"]
    _checks.at_least("d", d, 1, "the input dimension")
    _checks.at_least("k", k, 1, "the bottleneck width")
    if k > d:
        raise ValueError(f"k ({k}) must be <= d ({d}): the bottleneck cannot be wider than "
                         f"the input")
    if static["control"] == "fix_g" and k != 1:
        raise ValueError(f"k must be 1 with control = 'fix_g' (g* is a function of one "
                         f"projection w·x), got k = {k}")
    if static["init"] == "cos" and d < 2:
        raise ValueError(f"d must be >= 2 with init = 'cos' (w0 is rotated from w* towards "
                         f"an orthogonal direction, which d = 1 lacks: NaN weights), "
                         f"got d = {d}")
    _checks.at_least("width", width, 1, "the hidden width m of g_θ")
    _checks.at_least("n_train", n_train, 1, "the training samples")
    _checks.int32_size("n_train", n_train, "the minibatch order")
    _checks.at_least("n_val", static["n_val"], 1, "val_loss is a mean over them; 0 divides by "
                                                  "zero")
    _checks.at_least("n_eval", static["n_eval"], 1, "train_loss is a mean over "
                                                    "min(n_train, n_eval) samples")
    _checks.at_least("batch", batch, 1, "the SGD minibatch size")
    if batch > n_train:
        raise ValueError(f"batch ({batch}) must be <= n_train ({n_train}): minibatches are "
                         f"cut from epochs (permutations of the training set), so a larger "
                         f"one repeats training points within the batch")
    steps = max(int(static.get("steps", 1)), 1)
    _checks.elements("the data (n_train + n_val + 1) × d", (n_train + static["n_val"] + 1) * d,
                     n_train=n_train, n_val=static["n_val"], d=d)
    _checks.elements("the minibatch order steps × batch", steps * batch, steps=steps,
                     batch=batch)
    _checks.elements("the activations max(batch, 64) × width", max(batch, EVAL_BLOCK) * width,
                     batch=batch, width=width)
    _checks.elements("the parameters k·d + width·k + 2·width", k * d + width * k + 2 * width,
                     k=k, d=d, width=width)


def _check_dynamic(hp):
    # lr = 0 is allowed here (lr < 0, gradient ascent, is not): the network then stays at its
    # initialisation along the same data and batches, the chance-level baseline of cos_sim
    # (|CosSim| of a random w is ~1/sqrt(d)) and of train/val loss, and a sanity check of the
    # ntk probe (change exactly 0). Large lr is legitimate (divergence; see reduction).
    _checks.at_least("lr", hp["lr"], 0.0, "lr = 0 keeps the initialisation, a baseline; "
                                          "lr < 0 is gradient ascent")
    # replicate is folded into the init key as uint32 from a traced float: negative values
    # all become 0 (the same init as replicate 0), and float32 holds integers exactly only
    # up to 2**24 (larger replicates would share inits).
    _checks.at_least("replicate", hp["replicate"], 0, "negative replicates all map to the "
                                                      "init key of replicate 0")
    _checks.at_most("replicate", hp["replicate"], 2**24 - 1, "it is traced as a float: "
                                                            "float32 holds integers exactly "
                                                            "only up to 2**24")


def check_three_layer(static, hp):
    """The values ``bottleneck.three_layer`` refuses (its ``check``), before anything runs:

    - ``d >= 1``, ``k >= 1`` and ``k <= d`` (the bottleneck cannot be wider than the input).
    - ``control = "fix_g"`` needs ``k = 1`` (g* is a function of one projection).
    - ``init = "cos"`` needs ``d >= 2`` (no direction orthogonal to w* in d = 1: NaN weights)
      and ``-1 <= cos0 <= 1`` (a cosine; cos0 is ignored by the other inits).
    - ``control = "pretrain_g"``: ``pretrain_steps >= 0`` (0: no pretraining; more than
      ``steps``: the whole run pretrains, allowed).
    - ``width >= 1``; ``n_train >= 1`` (and <= 2**31 − 1: the batch order is int32);
      ``n_val >= 1`` and ``n_eval >= 1`` (the losses are means over them: 0 crashes measure).
    - ``1 <= batch <= n_train``: minibatches are cut from epochs of permutations of the
      training set; a larger batch would repeat points within itself.
    - ``lr >= 0``: lr = 0 is allowed as a control (the initialisation's cos_sim and losses
      along the same batches, a check of the ntk probe); lr < 0 is gradient ascent.
    - ``0 <= replicate <= 2**24 - 1`` (negative ones all share replicate 0's init; larger
      ones are not exact in float32 and would share inits).
    - shapes: the data (n_train + n_val + 1) × d, the batch order steps × batch, the
      parameters and the activations max(batch, 64) × width, each at most 2**36 elements.

    ``nu`` may be anything (0: a zero target, a control).
    """
    _check_static(static)
    _check_dynamic(hp)
    if static["init"] == "cos" and not -1.0 <= hp["cos0"] <= 1.0:
        raise ValueError(f"cos0 must be in [-1, 1] with init = 'cos' (the initial "
                         f"CosSim(w, w*)), got {hp['cos0']!r}")
    if static["control"] == "pretrain_g":
        _checks.at_least("pretrain_steps", hp["pretrain_steps"], 0, "control = 'pretrain_g': "
                                                                     "0 means no pretraining")


three_layer = Experiment(
    name="bottleneck.three_layer",
    doc="f(x) = vᵀσ(U·(Wx) + b), W ∈ R^{k×d}; y = sin(νπ·w*ᵀx); SGD on ½(y − f)²; probes "
        "inside the network (|CosSim(w, w*)|, NTK change and spectrum, g_θ on a grid).",
    params=_COMMON_PARAMS + (
        Param("cos0", 0.5, float, doc="initial CosSim(w, w*) for init = 'cos'"),
        Param("pretrain_steps", 10000, int,
              doc="control = 'pretrain_g': the first pretrain_steps steps train g_θ with "
                  "w = w* (counted in the sweep's steps)"),
        Param("d", 10, int, static=True, doc="input dimension"),
        Param("k", 1, int, static=True, doc="bottleneck width (1: the thesis' model)"),
        Param("init", "lecun", str, static=True, choices=INITS,
              doc="lecun | cos (CosSim(w0, w*) = cos0) | w_star (w0 = w*)"),
        Param("control", "none", str, static=True, choices=CONTROLS,
              doc="none | freeze_w (w never trained) | fix_g (g = g*, only w trained) | "
                  "pretrain_g (train g with w = w* first, then everything)"),
    ),
    metrics=_LOSS_METRICS + (
        Metric("cos_sim", "|CosSim(w, w*)| (k > 1: norm of w*'s projection on W's row space)"),
        Metric("cos_signed", "CosSim(w, w*) with its sign (k > 1: = cos_sim)"),
        Metric("w_norm", "‖W‖_F (the scale of the projection the 1-D learner sees)"),
    ),
    init=init, step=step, measure=measure, make_data=make_data,
    loss=train_objective, params_of_state=lambda state: state["params"],
    probes=(NTK_PROBE, G_GRID_PROBE),
    check=check_three_layer,
)


# ---- bottleneck.one_d: the same code with d = 1 and w = w* = ±1 frozen --------------------
def _as_1d(static):
    return {**static, "d": 1, "k": 1, "init": "w_star", "control": "freeze_w"}


def _on_1d(probe: Probe) -> Probe:
    def fn(exp, state, static, hp, data, opts):
        return probe.fn(exp, state, _as_1d(static), hp, data, opts)

    def check(exp, state, static, opts):
        if probe.check is not None:
            probe.check(exp, state, _as_1d(static), opts)

    return Probe(probe.name, probe.doc, fn, probe.defaults, check)


def _1d_measure(state, static, hp, data):
    s = _as_1d(static)
    tr, va = losses(state["params"], state["params"]["w"], s, hp, data)
    return {"train_loss": tr, "val_loss": va}


def check_one_d(static, hp):
    """The values ``bottleneck.one_d`` refuses: those of :func:`check_three_layer` for its
    parameters (d = k = 1 and the init and control are fixed): ``width >= 1``,
    ``1 <= n_train <= 2**31 − 1``, ``n_val >= 1``, ``n_eval >= 1``, ``1 <= batch <= n_train``,
    ``lr >= 0`` (lr = 0: the untrained g_θ's losses, a baseline),
    ``0 <= replicate <= 2**24 − 1`` and the same shape limits."""
    _check_static(_as_1d(static))
    _check_dynamic(hp)


one_d = Experiment(
    name="bottleneck.one_d",
    doc="the 1-D learner g_θ(z) = vᵀσ(u·z + b) alone on z ~ N(0, 1), y = sin(νπz).",
    params=_COMMON_PARAMS,
    metrics=_LOSS_METRICS,
    make_data=lambda key, static: make_data(key, _as_1d(static)),
    init=lambda key, static, hp, data: init(key, _as_1d(static), hp, data),
    step=lambda state, key, static, hp, data: step(state, key, _as_1d(static), hp, data),
    measure=_1d_measure,
    loss=lambda params, static, hp, data: train_objective(params, _as_1d(static), hp, data),
    params_of_state=lambda state: state["params"],
    probes=(_on_1d(NTK_PROBE), _on_1d(G_GRID_PROBE)),
    check=check_one_d,
)


EXPERIMENTS = {e.name: e for e in (three_layer, one_d)}
