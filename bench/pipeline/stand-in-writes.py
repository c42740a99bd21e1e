"""Write cost of the MongoDB stand-in (secantusdb) as a collection grows.

The pipeline benchmark stores every sample in MongoDB; on this machine that
is secantusdb, in memory. This prints the time of each write the sample path
makes (insert the sample, read it, upsert its raw result, update the sample)
per 500 samples stored, so that the pipeline figures can be read knowing
what the stand-in itself costs. Run by bench/pipeline/run.sh with the
project's venv (pymongo comes with secantusdb).

Usage: python stand-in-writes.py MONGO_URL
"""

import datetime
import os
import sys
import time

from pymongo import MongoClient

STEP = 500
STEPS = 8


def main() -> None:
    client = MongoClient(sys.argv[1])
    db = client["hendu_stand_in_writes"]
    db.drop_collection("samples")
    db.drop_collection("raw")
    samples, raw = db.samples, db.raw
    # The indexes the service creates on these collections.
    samples.create_index([("source_kind", 1), ("source_id", 1), ("captured_at", 1)])
    samples.create_index([("recognised_at", 1), ("set_aside_at", 1), ("captured_at", 1)])
    raw.create_index([("source_kind", 1), ("source_id", 1), ("captured_at", 1)])
    peaks = os.urandom(3000)  # about a 30 s sample's packed peaks
    t0 = datetime.datetime(2026, 1, 1)
    print("| samples stored | insert | find by id | upsert raw result | update sample |")
    print("| --- | --- | --- | --- | --- |")
    n = 0
    for _ in range(STEPS):
        spent = [0.0, 0.0, 0.0, 0.0]
        for _ in range(STEP):
            at = t0 + datetime.timedelta(seconds=30 * n)
            doc = {"_id": f"device-1-{n}", "source_kind": "device", "source_id": n % 10,
                   "captured_at": at, "duration_ms": 30000, "peaks": peaks}
            marks = [time.perf_counter()]
            samples.insert_one(doc)
            marks.append(time.perf_counter())
            samples.find_one({"_id": doc["_id"]})
            marks.append(time.perf_counter())
            raw.replace_one({"_id": doc["_id"]},
                            {"source_kind": "device", "source_id": n % 10,
                             "captured_at": at, "matched": None}, upsert=True)
            marks.append(time.perf_counter())
            samples.update_one({"_id": doc["_id"]},
                               {"$set": {"recognised_at": datetime.datetime.now()}})
            marks.append(time.perf_counter())
            for i in range(4):
                spent[i] += marks[i + 1] - marks[i]
            n += 1
        cells = " | ".join(f"{s / STEP * 1000:.2f} ms" for s in spent)
        print(f"| {n} | {cells} |", flush=True)
    client.drop_database("hendu_stand_in_writes")


if __name__ == "__main__":
    main()
