"""W1-W4 of ../shared/WORKLOADS.md in PyTorch, eager and torch.compile, for the side-by-side
figures of BENCHMARKS.md (issue #7). Run on the same machine as `scorefield bench`:

    python3 benches/pytorch_workloads.py [--device cuda] [--train-steps 200] [--sample-steps 1000]

Prints one line per workload and mode: median, min and max seconds over --repeats timings, and
the workload's figure (training steps/s or particle-steps/s), timed after a warm-up with
torch.cuda.synchronize() around each timing. The model, objective, schedule and shapes are the
ones scorefield's workloads use (the network predicts sigma * score; the loss is
0.5 |n + eps|^2 averaged over the batch, which is lambda(sigma) = sigma^2 weighting).

Not yet run: no session so far had a GPU or PyTorch (BENCHMARKS.md says when it has been).
"""
import argparse
import math
import statistics
import time

import torch

SHAPES = {"W1": (2, 128, 4096), "W2": (64, 512, 1024), "W3": (2, 128, 16384), "W4": (64, 512, 4096)}
SIGMAS = torch.exp(torch.linspace(math.log(1.0), math.log(0.01), 10))


class ScoreMlp(torch.nn.Module):
    def __init__(self, d, width, hidden=3):
        super().__init__()
        self.register_buffer("freqs", 16.0 * torch.randn(16))
        dims = [d + 32] + [width] * hidden + [d]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x, log_sigma):
        arg = log_sigma[:, None] * self.freqs[None, :]
        h = torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=1)
        for layer in self.layers[:-1]:
            h = torch.nn.functional.silu(layer(h))
        return self.layers[-1](h)


def data(workload, device):
    d = SHAPES[workload][0]
    if d == 2:
        k = torch.randint(0, 8, (65536,))
        means = 4.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], dim=1)
        return (means + 0.5 * torch.randn(65536, 2)).to(device)
    return (0.5 * torch.randn(16384, d)).to(device)


def train_step_fn(model, opt, x_all, batch):
    sigmas = SIGMAS.to(x_all.device)

    def step():
        idx = torch.randint(0, x_all.shape[0], (batch,), device=x_all.device)
        level = torch.randint(0, 10, (batch,), device=x_all.device)
        sigma = sigmas[level]
        eps = torch.randn(batch, x_all.shape[1], device=x_all.device)
        out = model(x_all[idx] + sigma[:, None] * eps, torch.log(sigma))
        loss = 0.5 * ((out + eps) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sample_fn(model, particles, d, steps, device):
    sigmas = SIGMAS.to(device)
    per_level = max(1, steps // 10)

    @torch.no_grad()
    def run():
        x = torch.randn(particles, d, device=device)
        for sigma in sigmas:
            alpha = 2e-5 * sigma**2 / sigmas[-1] ** 2
            log_sigma = torch.full((particles,), float(torch.log(sigma)), device=device)
            for _ in range(per_level):
                score = model(x, log_sigma) / sigma
                x = x + 0.5 * alpha * score + torch.sqrt(alpha) * torch.randn_like(x)
        return x

    return run, 10 * per_level


def timed(fn, repeats, device):
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--sample-steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {name}")
    for workload, (d, width, n) in SHAPES.items():
        for mode in ["eager", "compile"]:
            torch.manual_seed(0)
            model = ScoreMlp(d, width).to(a.device)
            net = torch.compile(model) if mode == "compile" else model
            if workload in ("W1", "W2"):
                step = train_step_fn(net, torch.optim.Adam(model.parameters(), lr=1e-3), data(workload, a.device), n)

                def run(step=step):
                    for _ in range(a.train_steps):
                        step()

                med, lo, hi = timed(run, a.repeats, a.device)
                figure = f"{a.train_steps / med:.2f} steps/s"
            else:
                run, steps = sample_fn(net, n, d, a.sample_steps, a.device)
                med, lo, hi = timed(run, a.repeats, a.device)
                figure = f"{n * steps / med:.3e} particle-steps/s"
            print(f"| {workload} | {mode} | {med:.3f} | {lo:.3f} | {hi:.3f} | {figure} |")


if __name__ == "__main__":
    main()
