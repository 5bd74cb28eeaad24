"""Independent PyTorch reference of one FLP and one OML meta-step (PAPER.md sections 2-4), for timing.

Written from the paper's equations, not from the engine's code. One meta-step:
  sample E sine episodes -> run the inner loop over T minibatches, keeping every step in the autograd
  graph -> MSE on the query set with the final fast weights -> backward (second order) -> Adam.

FLP (rule "oja"), every plastic layer l, each inner step:
  a_l = relu(W_l a_{l-1} + b_l) (output linear), e = y - y_hat (not detached),
  f_l = relu(B_l e + c_l), post_l = s_l f_l + (1 - s_l) a_l,
  W_l <- W_l + P_l * (post_l^T a_{l-1} - diag(sum_batch post_l^2) W_l)     (biases fixed)
OML (rule "sgd"): the front `rln` layers are fixed in the inner loop, the tail takes
  W <- W - lr * dL/dW (weights and biases) with create_graph=True.

Usage: python reference_flp.py '<json>'   (see main() for the fields); prints one JSON object.
"""
import json
import math
import os
import resource
import sys
import time
import warnings

if os.environ.get("METAPLASTIC_CPU_SHIM"):  # see python.mjs: stand-ins for NVIDIA libraries, never called
    sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)
warnings.filterwarnings("ignore")  # e.g. "Failed to initialize NumPy" on a bare venv
import torch  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_net(sizes, rln, rule, device, gen):
    """Meta-parameters: forward W, b for every layer; FLP adds feedback B, c, strength s, plasticity P."""
    groups = {"forward": [], "feedback": [], "plasticity": [], "strength": []}
    weights, biases = [], []
    for fan_in, units in zip(sizes[:-1], sizes[1:]):
        w = (torch.randn(units, fan_in, generator=gen) * math.sqrt(2.0 / fan_in)).to(device).requires_grad_()
        b = torch.zeros(units, device=device, requires_grad=True)
        weights.append(w)
        biases.append(b)
        groups["forward"] += [w, b]
    fb = []
    if rule == "oja":
        outputs = sizes[-1]
        for l in range(rln, len(weights)):
            units = sizes[l + 1]
            B = (torch.randn(units, outputs, generator=gen) * math.sqrt(2.0 / outputs)).to(device).requires_grad_()
            c = torch.zeros(units, device=device, requires_grad=True)
            s = torch.full((), 0.5, device=device, requires_grad=True)
            P = torch.zeros(units, sizes[l], device=device, requires_grad=True)
            fb.append((B, c, s, P))
            groups["feedback"] += [B, c]
            groups["strength"].append(s)
            groups["plasticity"].append(P)
    return weights, biases, fb, groups


def sine_episodes(E, functions, batches, batch, query, slots, device, gen):
    """E episodes of continual sine regression: support [E, T, B, slots+1], query [E, F*Q, slots+1]."""
    amp = torch.rand(E, functions, generator=gen) * 5.0 + 0.1
    phase = torch.rand(E, functions, generator=gen) * math.pi
    slot = torch.eye(slots)[:functions]  # [F, slots]

    def points(n):
        x = torch.rand(E, functions, n, generator=gen) * 10.0 - 5.0
        y = amp[..., None] * torch.sin(x + phase[..., None])
        inp = torch.cat([slot[None, :, None, :].expand(E, functions, n, slots), x[..., None]], dim=-1)
        return inp, y[..., None]

    sx, sy = points(batches * batch)
    qx, qy = points(query)
    T = functions * batches
    sx = sx.reshape(E, T, batch, slots + 1)
    sy = sy.reshape(E, T, batch, 1)
    return [t.to(device) for t in (sx, sy, qx.reshape(E, -1, slots + 1), qy.reshape(E, -1, 1))]


def tail(h, W, b):
    """Plastic layers with per-episode weights W[k] [E, out, in]; returns the input and output of each."""
    pre, post = [], []
    for k in range(len(W)):
        z = torch.baddbmm(b[k].unsqueeze(1), h, W[k].transpose(1, 2))
        pre.append(h)
        h = z if k + 1 == len(W) else torch.relu(z)
        post.append(h)
    return pre, post


def meta_step(cfg, net, opt, device, gen):
    weights, biases, fb, _ = net
    rln, E = cfg["rln"], cfg["metaBatch"]
    sx, sy, qx, qy = sine_episodes(E, cfg["functions"], cfg["batchesPerFunction"], cfg["batchSize"],
                                   cfg["queryPerFunction"], cfg["slots"], device, gen)
    T = sx.shape[1]

    def front(x):
        h = x
        for l in range(rln):
            h = torch.relu(torch.nn.functional.linear(h, weights[l], biases[l]))
        return h

    feats = front(sx)  # [E, T, B, F]
    W = [w.unsqueeze(0).expand(E, -1, -1) for w in weights[rln:]]
    b = [x.unsqueeze(0).expand(E, -1) for x in biases[rln:]]
    for t in range(T):
        y = sy[:, t]
        pre, post = tail(feats[:, t], W, b)
        if cfg["rule"] == "oja":
            e = y - post[-1]
            newW = []
            for k, (B, c, s, P) in enumerate(fb):
                f = torch.relu(torch.nn.functional.linear(e, B, c))
                teach = s * f + (1 - s) * post[k]
                hebb = torch.bmm(teach.transpose(1, 2), pre[k])
                decay = teach.square().sum(1).unsqueeze(2) * W[k]
                newW.append(W[k] + P * (hebb - decay))
            W = newW
        else:
            loss = (post[-1] - y).square().mean(dim=(1, 2)).sum()
            grads = torch.autograd.grad(loss, W + b, create_graph=True)
            lr = cfg["lr"]
            W = [w - lr * g for w, g in zip(W, grads[: len(W)])]
            b = [x - lr * g for x, g in zip(b, grads[len(W):])]
    _, post = tail(front(qx), W, b)
    meta_loss = (post[-1] - qy).square().mean(dim=(1, 2)).mean()
    opt.zero_grad(set_to_none=True)
    meta_loss.backward()
    opt.step()
    return meta_loss.item()


def bench_meta(cfg, device):
    gen = torch.Generator().manual_seed(cfg.get("seed", 1))
    sizes = cfg["sizes"]
    net = make_net(sizes, cfg["rln"], cfg["rule"], device, gen)
    lrs = {"forward": 1e-4, "feedback": 1e-4, "plasticity": 1e-8, "strength": 1e-4}
    opt = torch.optim.Adam([{"params": p, "lr": lrs[g]} for g, p in net[3].items() if p])
    times, losses = [], []
    for i in range(cfg["warmup"] + cfg["repeats"]):
        sync(device)
        t0 = time.perf_counter()
        losses.append(meta_step(cfg, net, opt, device, gen))
        sync(device)
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
    return {"seconds": times, "metaLoss": losses}


def bench_matmul(cfg, device):
    """Matmul rate: one large square float32 matmul, and a batched matmul at the nets' own shapes."""
    out = {}
    cases = [("square", (cfg["n"], cfg["n"]), (cfg["n"], cfg["n"]))]
    for name, a_shape, b_shape in cfg.get("batched", []):
        cases.append((name, tuple(a_shape), tuple(b_shape)))
    for name, a_shape, b_shape in cases:
        a = torch.randn(*a_shape, device=device)
        b = torch.randn(*b_shape, device=device)
        flops = 2 * a.numel() * b_shape[-1]
        for _ in range(2):
            a @ b
        sync(device)
        reps, times = 0, []
        while reps < cfg["repeats"] or sum(times) < cfg["minSeconds"]:
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t0)
            reps += 1
        times.sort()
        # The rate is best-of-N: what the machine can reach, less sensitive to other load than a median.
        out[name] = {"shapeA": list(a_shape), "shapeB": list(b_shape), "flops": flops, "repeats": reps,
                     "bestSeconds": times[0], "medianSeconds": times[len(times) // 2],
                     "gflops": flops / times[0] / 1e9, "medianGflops": flops / times[len(times) // 2] / 1e9}
    return out


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg.get("threads", 2))
    device = torch.device(cfg.get("device", "cpu"))
    if cfg["kind"] == "matmul":
        result = bench_matmul(cfg, device)
    else:
        result = bench_meta(cfg, device)
    result["torch"] = torch.__version__
    result["threads"] = torch.get_num_threads()
    result["device"] = str(device)
    result["maxRssMiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peakGpuMiB"] = torch.cuda.max_memory_reserved(device) / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
