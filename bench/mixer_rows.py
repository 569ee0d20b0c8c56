"""mixer_rows.py: the rows of the mixer baselines bench/ssd_torch.py and
bench/gdn_torch.py (head dims and sequence lengths at a fixed B*T), as the
options --quick, --t and --d, shared by both."""
import sys


def add_options(ap):
    ap.add_argument("--quick", action="store_true", help="T up to 8K only")
    ap.add_argument("--t", default=None,
                    help="comma-separated sequence lengths (default 2K, 4K, .. 64K): Triton "
                         "autotunes at each new shape, so fewer rows save minutes")
    ap.add_argument("--d", default="64,128", help="comma-separated head dims (64, 128)")


def rows(a, prog):
    """(head dims, sequence lengths) of parsed options a, or None after a
    one-line error naming prog."""
    try:
        ts = [int(x) for x in a.t.split(",")] if a.t else None
        ds = [int(x) for x in a.d.split(",")]
    except ValueError:
        print(f"{prog}: --t, --d: expected comma-separated integers", file=sys.stderr)
        return None
    if any(d not in (64, 128) for d in ds) or any(t < 64 for t in ts or []):
        print(f"{prog}: --d takes 64 and 128, --t lengths of at least 64", file=sys.stderr)
        return None
    return ds, ts or [2048 << i for i in range(3 if a.quick else 6)]
