"""Optional PyTorch baselines: per-run loops and ``torch.func.vmap`` ensembles.

Owns: importing torch if it is there (``_torch``) and the PyTorch versions of the mean model,
the DC neuron and the bottleneck network (``torch_baselines``), each timed up to a budget.

Must not: import torch at module import (it is optional), or use JAX: these rows say what the
same math costs outside JAX.
"""

from __future__ import annotations

import math
import time

import numpy as np

from jaxdyn.bench.baselines import _lrs


def _torch():
    try:
        import torch  # noqa: F401
        import torch.func  # noqa: F401
    except Exception as e:  # noqa: BLE001 - optional: any failure means "skip"
        return None, f"{type(e).__name__}: {e}"
    return torch, ""


def torch_baselines(torch, suite_sizes: dict, time_cap: float = 6.0) -> tuple[list, list]:
    """PyTorch per-run loops (autograd + torch.optim.SGD, how most research code runs) and
    torch.func.vmap ensembles (functional grad of the same loss vmapped over runs, one
    Python-level step loop) for the mean model, the DC neuron and the bottleneck network,
    float32 on CUDA if torch sees it, else the CPU. Each is timed after a warm-up and
    stops at ``time_cap`` seconds (per-run loops after a whole run, ensembles after a step):
    its row says how many runs × steps it did; its per-step cost is flat after warm-up."""
    rows, notes = [], []
    f32 = torch.float32
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, steps):
        """fn(steps, deadline) -> (runs, steps per run) done; returns those and the wall."""
        # warm-up for up to 2 s (one run of a per-run loop): torch's first vmap(grad) calls
        # are tens of times slower than its steady state (measured: 150 ms vs 5 ms a step)
        fn(steps, time.perf_counter() + min(2.0, time_cap / 3))
        sync()
        t = time.perf_counter()
        runs, done = fn(steps, t + time_cap)
        sync()
        return runs, done, time.perf_counter() - t

    def stop(deadline):
        if time.perf_counter() > deadline:
            sync()
            return time.perf_counter() > deadline
        return False

    # -- mean model: loss l_sym(d (a- + a+) g(b))
    def l_sym(s):
        return 0.5 * (torch.nn.functional.softplus(-s) + torch.nn.functional.softplus(s))

    def g_b(b):
        return b * 0.5 * (1 + torch.erf(b / math.sqrt(2))) + torch.exp(-0.5 * b * b) / math.sqrt(
            2 * math.pi)

    def mm_loss(am, ap, b, d):
        return l_sym(d * (am + ap) * g_b(b))

    if "eos.mean_model" in suite_sizes:
        steps, loop_runs, vm_runs = suite_sizes["eos.mean_model"]
        lrs = _lrs(vm_runs)

        def loop(steps, deadline):
            for r in range(loop_runs):
                if r and stop(deadline):
                    return r, steps
                p = [(0.01 * torch.randn((), dtype=f32, device=dev)).requires_grad_(),
                     (0.01 * torch.randn((), dtype=f32, device=dev)).requires_grad_(),
                     torch.zeros((), dtype=f32, device=dev, requires_grad=True)]
                opt = torch.optim.SGD(p, lr=float(lrs[r]))
                for _ in range(steps):
                    opt.zero_grad()
                    mm_loss(*p, 100.0).backward()
                    opt.step()
            return loop_runs, steps

        n_r, n_s, w = timed(loop, steps)
        rows.append(("eos.mean_model", "torch per-run loop (autograd + optim.SGD)", n_r, n_s,
                     w))
        grad = torch.func.vmap(torch.func.grad(mm_loss, argnums=(0, 1, 2)),
                               in_dims=(0, 0, 0, None))
        lr_t = torch.tensor(lrs, dtype=f32, device=dev)

        def ens(steps, deadline):
            am = 0.01 * torch.randn(vm_runs, dtype=f32, device=dev)
            ap = 0.01 * torch.randn(vm_runs, dtype=f32, device=dev)
            b = torch.zeros(vm_runs, dtype=f32, device=dev)
            with torch.no_grad():
                for s in range(steps):
                    if s and stop(deadline):
                        return vm_runs, s
                    g0, g1, g2 = grad(am, ap, b, 100.0)
                    am, ap, b = am - lr_t * g0, ap - lr_t * g1, b - lr_t * g2
            return vm_runs, steps

        n_r, n_s, w = timed(ens, steps)
        rows.append(("eos.mean_model", "torch.func.vmap ensemble", n_r, n_s, w))

    # -- DC neuron (nll loss, no bias): t = sep (θ·u) + θ·w_i on a shared minibatch
    if "dc.neuron" in suite_sizes:
        steps, loop_runs, vm_runs = suite_sizes["dc.neuron"]
        B, sep, p_d, dd, c = 75, 2.0, 0.5, 0.0, 0.0
        n_train = 800
        W = torch.randn(n_train, 2, dtype=f32, device=dev)
        u = torch.tensor([0.6, 0.8], dtype=f32, device=dev)
        nb = -(-n_train // B)
        perms = [torch.randperm(n_train, device=dev) for _ in range(-(-steps // nb))]
        batches = [perms[k // nb][(k % nb) * B:(k % nb + 1) * B] for k in range(steps)]
        rs = np.linspace(0.5, 8.0, vm_runs).astype(np.float32)

        def dc_loss(th, r, rows):
            t = sep * (th @ u) + rows @ th
            eps = c / r
            b = math.log(p_d) - eps
            return torch.mean(-eps - b * torch.exp(-r * (t - dd)))

        def loop(steps, deadline):
            for k in range(loop_runs):
                if k and stop(deadline):
                    return k, steps
                th = (0.01 * torch.randn(2, dtype=f32, device=dev)).requires_grad_()
                opt = torch.optim.SGD([th], lr=0.01)
                r = float(rs[k])
                for s in range(steps):
                    opt.zero_grad()
                    dc_loss(th, r, W[batches[s]]).backward()
                    opt.step()
            return loop_runs, steps

        n_r, n_s, w = timed(loop, steps)
        rows.append(("dc.neuron", "torch per-run loop (autograd + optim.SGD)", n_r, n_s,
                     w))
        grad = torch.func.vmap(torch.func.grad(dc_loss), in_dims=(0, 0, None))
        r_t = torch.tensor(rs, dtype=f32, device=dev)

        def ens(steps, deadline):
            th = 0.01 * torch.randn(vm_runs, 2, dtype=f32, device=dev)
            with torch.no_grad():
                for s in range(steps):
                    if s and stop(deadline):
                        return vm_runs, s
                    th = th - 0.01 * grad(th, r_t, W[batches[s]])
            return vm_runs, steps

        n_r, n_s, w = timed(ens, steps)
        rows.append(("dc.neuron", "torch.func.vmap ensemble", n_r, n_s, w))

    # -- bottleneck: f(x) = v·relu(u (w·x) + b), ½ mean (y − f)², SGD on (w, u, b, v)
    if "bottleneck.three_layer" in suite_sizes:
        steps, loop_runs, vm_runs, width, n_train = suite_sizes["bottleneck.three_layer"]
        d, B, nu = 10, 32, 0.5
        X = torch.randn(n_train, d, dtype=f32, device=dev)
        ws = torch.nn.functional.normalize(torch.randn(d, dtype=f32, device=dev), dim=0)
        Y = torch.sin(nu * math.pi * (X @ ws))
        idx = torch.randint(0, n_train, (steps, B), device=dev)

        def bn_loss(w, uu, b, v, xb, yb):
            h = torch.relu((xb @ w)[:, None] * uu + b)
            r = yb - h @ v
            return 0.5 * torch.mean(r * r)

        def init(n=None):
            shape = (n,) if n else ()
            return [torch.randn(*shape, d, dtype=f32, device=dev) / math.sqrt(d),
                    torch.randn(*shape, width, dtype=f32, device=dev),
                    torch.randn(*shape, width, dtype=f32, device=dev),
                    torch.randn(*shape, width, dtype=f32, device=dev) / math.sqrt(width)]

        def loop(steps, deadline):
            for k in range(loop_runs):
                if k and stop(deadline):
                    return k, steps
                p = [t.requires_grad_() for t in init()]
                opt = torch.optim.SGD(p, lr=5e-4)
                for s in range(steps):
                    opt.zero_grad()
                    bn_loss(*p, X[idx[s]], Y[idx[s]]).backward()
                    opt.step()
            return loop_runs, steps

        n_r, n_s, w = timed(loop, steps)
        rows.append(("bottleneck.three_layer", "torch per-run loop (autograd + optim.SGD)",
                     n_r, n_s, w))
        grad = torch.func.vmap(torch.func.grad(bn_loss, argnums=(0, 1, 2, 3)),
                               in_dims=(0, 0, 0, 0, None, None))

        def ens(steps, deadline):
            p = init(vm_runs)
            with torch.no_grad():
                for s in range(steps):
                    if s and stop(deadline):
                        return vm_runs, s
                    g = grad(*p, X[idx[s]], Y[idx[s]])
                    p = [a - 5e-4 * ga for a, ga in zip(p, g)]
            return vm_runs, steps

        n_r, n_s, w = timed(ens, steps)
        rows.append(("bottleneck.three_layer", "torch.func.vmap ensemble", n_r, n_s, w))

    out = [{"kind": "baseline", "experiment": fam, "case": "torch",
            "impl": impl + (f" (stopped at the {time_cap:g} s budget)" if w >= time_cap else ""),
            "runs": runs, "steps": steps, "wall_s": w, "compile_s": float("nan"),
            "run_steps_per_s": runs * steps / w,
            "torch_version": torch.__version__, "torch_device": str(dev)}
           for fam, impl, runs, steps, w in rows]
    return out, notes
