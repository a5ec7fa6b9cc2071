"""Pose extraction speed on the shared photos: detections and median milliseconds per photo, as JSON.

python benchmarks/extract_speed.py [--photos ../shared/photos] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.extract import NoPersonError, extract_pose


def main() -> None:
    """Run every photo `repeats` times (after one warm-up call) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[2] / "shared" / "photos"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per photo (default: 3)")
    args = parser.parse_args()
    photos = sorted(p for p in Path(args.photos).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        sys.exit(f"no photos in {args.photos}")

    start = time.perf_counter()
    extract_pose(photos[0])  # builds the model once, outside the timings
    load_s = time.perf_counter() - start

    found, per_photo = [], []
    for path in photos:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            try:
                extract_pose(path)
                ok = True
            except NoPersonError:
                ok = False
            times.append((time.perf_counter() - start) * 1000)
        per_photo.append(statistics.median(times))
        if ok:
            found.append(path.name)
    print(
        json.dumps(
            {
                "photos": len(photos),
                "detections": len(found),
                "no_person": sorted(p.name for p in photos if p.name not in found),
                "median_ms_per_photo": round(statistics.median(per_photo), 1),
                "max_ms_per_photo": round(max(per_photo), 1),
                "first_call_s": round(load_s, 2),
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
