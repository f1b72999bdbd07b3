"""One call of one case for Nsight Compute: `python -m roofbench.bench.sweep.ncu_target SPEC`.

SPEC is JSON: {"op", "impl", "shape", "plugins"}. The case runs twice to warm up (compilation,
autotuning, library handles), then once between cudaProfilerStart and cudaProfilerStop, which
is all that `ncu --profile-from-start off` profiles.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import torch

    from roofbench.kernels.catalog import get_impl, load_plugins, make_case

    spec = json.loads(argv[0])
    for plugin in spec.get("plugins", []):
        load_plugins([plugin])
    case = make_case(spec["op"], **spec["shape"])
    impl = get_impl(case.op, spec["impl"])
    device = torch.device("cuda")
    fn = impl.bind(case)
    inputs = case.make_inputs(device, seed=7)
    out = case.empty_output(device)
    for _ in range(2):
        case.call(fn, inputs, out)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    case.call(fn, inputs, out)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
