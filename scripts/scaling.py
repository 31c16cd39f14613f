#!/usr/bin/env python3
"""Writes SCALING.md, the capacity model, from the benchmarks' results files.

    python3 scripts/scaling.py [--results DIR] [--out FILE] [--assume NAME=VALUE ...]

It reads target/bench-results/{load,inbox,pubsub,throughput,e2e}.json (each written by a
`cargo bench` run of this repository), prints nothing it did not read or compute, and fails
with the bench to run when a file or a figure is missing. Every measured figure is cited
with its bench and date; every computed one shows its inputs. The assumptions below are the
only other inputs; `--assume` overrides one for a what-if run (the output then says so).

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# --- Assumptions: every input of the model that is not measured -----------------------------

# The case the issue asks about: concurrent users (a session open), notifications per second
# on average and at peak; plus one time-deal broadcast to every session.
USERS = 1_000_000
AVG_NOTIFICATIONS_PER_SEC = 10_000
PEAK_NOTIFICATIONS_PER_SEC = 50_000
# The growth table: these user counts, notification rates in proportion to USERS.
GROWTH_USERS = (100_000, 1_000_000, 10_000_000, 100_000_000)

# Open STOMP sessions per concurrent user (browser tabs, devices); each session of a user
# receives each of the user's notifications and the broadcast.
SESSIONS_PER_USER = 1.5
# Descriptors per session: one socket (raw WebSocket and SockJS `websocket`; the streaming
# and polling transports hold one request at a time, too).
FDS_PER_SESSION = 1

# A gateway pod: cores and memory limit. Figures measured on the bench machine's cores
# (`machine.cpus` of the results file) are scaled by pod cores / bench cores.
GATEWAY_POD_CORES = 2
GATEWAY_POD_MEMORY_MIB = 4096
# RLIMIT_NOFILE hard limit of a pod (the common container runtime default); the gateway
# raises its soft limit to it at start. The bench machine's own limit is in the sources.
POD_FD_LIMIT = 1_048_576
# An ingest pod's cores (the throughput bench's events/s scale by pod cores / bench cores).
INGEST_POD_CORES = 2

# Headroom: the share of a measured ceiling a unit is planned to use at peak.
CPU_HEADROOM = 0.6  # pods run at <= 60 % of the measured CPU ceiling
MEMORY_HEADROOM = 0.7  # sessions fill <= 70 % of the pod's limit: the rest is for queues
# and send buffers of bursts, and for kernel socket memory, which RSS does not count
FD_HEADROOM = 0.8  # <= 80 % of the descriptor limit
REDIS_HEADROOM = 0.6  # a Redis shard at <= 60 % of its measured delivered messages/s
MYSQL_HEADROOM = 0.6  # a primary at <= 60 % of its measured batch-insert rows/s
# Pods kept beyond the computed count, so that losing one at peak stays within bounds.
SPARE_PODS = 1

# A time deal reaches every session within this many seconds of its PUBLISH.
BROADCAST_DEADLINE_SECS = 10
# Kafka partitions of each input topic are sized for the ingest pods this many times the
# users need (topics are created once: adding partitions later breaks per-key order), and
# rounded up to a count with many divisors (the chart: pods should divide partitions).
PARTITION_GROWTH = 10
PARTITION_COUNTS = (6, 12, 24, 36, 48, 60, 72, 96, 120, 144, 180, 240, 360, 480, 720, 960,
                    1440, 2160, 2880, 4320, 5040, 10080)
# A Redis Cluster has at least this many masters (with a replica each).
REDIS_MIN_SHARDS = 3
# Rows written per notification (ingest stores each once; dedup is the insert itself).
ROWS_PER_NOTIFICATION = 1
# One production primary sustains this many times the bench machine's insert rate
# (1.0: only what was measured; inserts do not scale with cores the way pods do).
MYSQL_PRIMARY_SCALE = 1.0
# Up to this many primaries, partitioning the table by user id by hand is planned; beyond,
# a distributed MySQL-compatible store (every inbox query is by user id, so both fit).
MYSQL_MAX_MANUAL_PARTITIONS = 16

ASSUMPTIONS = {
    "USERS": "concurrent users of the headline case",
    "AVG_NOTIFICATIONS_PER_SEC": "notifications/s on average at USERS",
    "PEAK_NOTIFICATIONS_PER_SEC": "notifications/s at peak at USERS",
    "GROWTH_USERS": "user counts of the growth table (rates in proportion)",
    "SESSIONS_PER_USER": "open sessions per concurrent user (tabs, devices)",
    "FDS_PER_SESSION": "descriptors per session",
    "GATEWAY_POD_CORES": "cores of a gateway pod",
    "GATEWAY_POD_MEMORY_MIB": "memory limit of a gateway pod, MiB",
    "POD_FD_LIMIT": "descriptor limit (RLIMIT_NOFILE) of a pod",
    "INGEST_POD_CORES": "cores of an ingest pod",
    "CPU_HEADROOM": "share of the measured CPU ceiling used at peak",
    "MEMORY_HEADROOM": "share of a pod's memory limit sessions may fill",
    "FD_HEADROOM": "share of the descriptor limit used",
    "REDIS_HEADROOM": "share of a shard's measured messages/s used",
    "MYSQL_HEADROOM": "share of a primary's measured insert rate used",
    "SPARE_PODS": "pods beyond the computed count (N+1)",
    "BROADCAST_DEADLINE_SECS": "a broadcast reaches every session within, s",
    "PARTITION_GROWTH": "partitions sized for the ingest pods of this many times the users",
    "PARTITION_COUNTS": "partition counts to round up to",
    "REDIS_MIN_SHARDS": "fewest masters of a Redis Cluster",
    "ROWS_PER_NOTIFICATION": "MySQL rows written per notification",
    "MYSQL_PRIMARY_SCALE": "a production primary's insert rate / the bench machine's",
    "MYSQL_MAX_MANUAL_PARTITIONS": "most primaries partitioned by user id by hand",
}

# The benches this model reads, and the command that writes each file.
BENCHES = {
    "load": "cargo bench -p gateway --bench load -- --rabbit ''",
    "inbox": "cargo bench -p gateway --bench inbox -- --quick",
    "pubsub": "cargo bench -p devstack --bench pubsub",
    "throughput": "cargo bench -p ingest --bench throughput",
    "e2e": "cargo bench -p devstack --bench e2e",
}

ROOT = Path(__file__).resolve().parent.parent


class InputError(Exception):
    """A results file or a figure in it is missing or unreadable."""


# --- Reading the results files ---------------------------------------------------------------


class Source:
    """One results file: its envelope and a reader for its figures."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path
        if not path.is_file():
            raise InputError(f"{path} is missing: run `{BENCHES[name]}` first")
        try:
            self.doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{path} is not readable JSON ({err}): run `{BENCHES[name]}` again")
        for key in ("bench", "date", "commit", "machine"):
            self.get(key)
        if self.doc["bench"] != name:
            raise InputError(f"{path} holds bench {self.doc['bench']!r}, not {name!r}")
        self.date = str(self.doc["date"])[:10]

    def get(self, dotted: str):
        """The value at `a.b.0.c`; an error naming the file, the key and the bench if absent."""
        value = self.doc
        for part in dotted.split("."):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value and value[part] is not None:
                value = value[part]
            else:
                raise InputError(
                    f"{self.path} has no {dotted}: run `{BENCHES[self.name]}` again"
                )
        return value

    def number(self, dotted: str) -> float:
        value = self.get(dotted)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{self.path}: {dotted} is {value!r}, not a number")
        return float(value)

    def numbers(self, dotted: str) -> list:
        values = self.get(dotted)
        if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise InputError(f"{self.path}: {dotted} is {values!r}, not a list of numbers")
        return [float(v) for v in values]

    def cite(self) -> str:
        return f"{self.name} {self.date}"


class Figure:
    """A measured figure: value, unit, what it is, and where it comes from."""

    def __init__(self, value: float, unit: str, label: str, source: Source, key: str):
        self.value, self.unit, self.label, self.source, self.key = value, unit, label, source, key

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{fmt(self.value)}{unit} ({self.source.cite()})"


def read_sources(results: Path) -> dict:
    sources, missing = {}, []
    for name in BENCHES:
        try:
            sources[name] = Source(name, results / f"{name}.json")
        except InputError as err:
            missing.append(str(err))
    if missing:
        raise InputError("\n".join(missing))
    return sources


def measured(src: dict) -> dict:
    """Every figure the model uses, read from the results files."""
    load, inbox, pubsub, throughput, e2e = (src[n] for n in BENCHES)
    f = {}

    def add(name, source, key, unit, label, value=None):
        f[name] = Figure(source.number(key) if value is None else value, unit, label, source, key)

    add("kb_raw", load, "results.idle.raw.kb_per_session", "KB", "RSS per idle session, raw WebSocket")
    add("raw_sessions", load, "results.idle.raw.sessions", "sessions", "idle raw WebSocket sessions held by one gateway")
    add("kb_sockjs", load, "results.idle.sockjs.kb_per_session", "KB", "RSS per idle session, SockJS websocket")
    add("sockjs_sessions", load, "results.idle.sockjs.sessions", "sessions", "idle SockJS sessions held by one gateway")
    add("base_rss", load, "results.idle.gateway_rss_at_start_kib", "KiB", "gateway RSS at start")
    add("fd_soft", load, "machine.gateway_fd_limit.soft", "fds", "gateway's descriptor soft limit on the bench machine")
    add("fd_hard", load, "machine.gateway_fd_limit.hard", "fds", "gateway's descriptor hard limit on the bench machine")
    add("file_max", load, "machine.file_max", "fds", "the bench machine's fs.file-max")
    subscribers = fmt(load.number("results.deliveries.subscribers"))
    add("burst_rate", load, "results.deliveries.burst.deliveries_per_sec", "/s",
        f"deliveries/s of one gateway, one burst to {subscribers} sessions")
    add("burst_us", load, "results.deliveries.burst.gateway_cpu_us_per_delivery", "µs", "gateway CPU per delivery, burst")
    add("burst_p99", load, "results.deliveries.burst.p99_ms", "ms", "publish→receive p99, burst (queueing)")
    add("paced_offered", load, "results.deliveries.paced.offered_per_sec", "/s", "paced delivery run, offered rate")
    add("paced_us", load, "results.deliveries.paced.gateway_cpu_us_per_delivery", "µs", "gateway CPU per delivery, paced")
    add("paced_p50", load, "results.deliveries.paced.p50_ms", "ms", "publish→receive p50, paced")
    add("paced_p99", load, "results.deliveries.paced.p99_ms", "ms", "publish→receive p99, paced")
    add("bcast_sessions", load, "results.broadcast.sessions", "sessions", "broadcast: sessions on one gateway")
    add("bcast_last_ms", load, "results.broadcast.single.publish_to_last_median_ms", "ms", "broadcast: PUBLISH → last session, median")
    add("bcast_rate", load, "results.broadcast.single.deliveries_per_sec_median", "/s", "broadcast: deliveries/s of one gateway, median")
    add("bcast_us", load, "results.broadcast.single.gateway_cpu_us_per_delivery_median", "µs", "broadcast: gateway CPU per delivery, median")
    add("personal_p99", load, "results.broadcast.personal_without_broadcasts.p99_ms", "ms", "personal p99 without broadcasts")
    every = fmt(load.number("results.broadcast.personal_with_broadcasts.broadcast_every_ms"))
    add("personal_p99_bcast", load, "results.broadcast.personal_with_broadcasts.p99_ms", "ms",
        f"personal p99 with a broadcast every {every} ms")
    recovered = fmt(load.number("results.recovery.recovered"))
    add("recovery_ms", load, "results.recovery.to_last_message_median_ms", "ms",
        f"recovery of {recovered} on SUBSCRIBE, median")
    add("load_cpus", load, "machine.cpus", "cores", "bench machine cores (load)")

    add("bytes_per_row", inbox, "results.table.bytes_per_row", "B", "InnoDB bytes per notification row (data + indexes)")
    endpoints = inbox.get("results.endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise InputError(f"{inbox.path}: results.endpoints is empty: run `{BENCHES['inbox']}` again")
    for i, e in enumerate(endpoints):
        name = e.get("endpoint", str(i)) if isinstance(e, dict) else str(i)
        label = e.get("label", name) if isinstance(e, dict) else name
        add(f"rest_{name}", inbox, f"results.endpoints.{i}.rest.req_per_sec", "req/s", f"REST {label}")
        add(f"rest_{name}_us", inbox, f"results.endpoints.{i}.rest.cpu_us_per_request.gateway", "µs",
            f"REST {label}: gateway CPU per request")

    add("single_rate", pubsub, "results.single_node.delivered_per_sec", "msg/s", "one Redis node, delivered")
    add("single_us", pubsub, "results.single_node.redis_cpu_us_per_message", "µs", "one Redis node, CPU per message")
    add("cluster_rate", pubsub, "results.cluster_3_shards.delivered_per_sec", "msg/s", "3-shard cluster, delivered")
    add("cluster_us", pubsub, "results.cluster_3_shards.redis_cpu_us_per_message", "µs", "3-shard cluster, Redis CPU per message")
    per_shard = pubsub.numbers("results.cluster_3_shards.per_shard_delivered_per_sec")
    share = pubsub.numbers("results.cluster_3_shards.shard_share")
    if sum(share) <= 0:
        raise InputError(f"{pubsub.path}: results.cluster_3_shards.shard_share sums to 0")
    add("shard_rate", pubsub, "results.cluster_3_shards.per_shard_delivered_per_sec", "msg/s",
        f"per shard delivered, mean of {', '.join(fmt(v) for v in per_shard)}", sum(per_shard) / len(per_shard))
    add("shard_skew", pubsub, "results.cluster_3_shards.shard_share", "",
        f"busiest shard's share × shards (shares {', '.join(fmt(v) for v in share)})",
        max(share) / sum(share) * len(share))
    add("pubsub_cpus", pubsub, "machine.cpus", "cores", "bench machine cores (pubsub)")

    broker = throughput.get("results.broker")
    add("ingest_rate", throughput, "results.ingest_events_per_sec", "events/s",
        f"one ingest instance ({broker} broker), stored and published")
    add("insert_rate", throughput, "results.raw_insert_rows_per_sec", "rows/s", "raw batch INSERT into one MariaDB primary")
    add("ingest_ratio", throughput, "results.ratio", "", "ingest / raw insert")
    add("store_parallelism", throughput, "results.store_parallelism", "", "ingest store parallelism")
    add("throughput_cpus", throughput, "machine.cpus", "cores", "bench machine cores (throughput)")

    configs = e2e.get("configurations")
    index = next((i for i, c in enumerate(configs) if isinstance(c, dict) and c.get("kafka_properties") == ""), None)
    if index is None:
        raise InputError(f"{e2e.path} has no configuration with the shipped defaults: run `{BENCHES['e2e']}` again")
    best = f"configurations.{index}.figures.highest_sustainable"
    add("e2e_rate", e2e, f"{best}.rate_per_sec", "events/s", "end to end, highest sustainable rate (one of each, one machine)")
    add("e2e_p50", e2e, f"{best}.p50_ms", "ms", "end to end p50 at that rate")
    add("e2e_p99", e2e, f"{best}.p99_ms", "ms", "end to end p99 at that rate")
    for process in ("ingest", "gateway", "mariadb", "redis"):
        add(f"e2e_{process}_us", e2e, f"{best}.cpu_us_per_event.{process}", "µs", f"end to end, {process} CPU per event")
    return f


# --- Formatting --------------------------------------------------------------------------------


def fmt(x: float) -> str:
    """A number as the README writes them: spaces between thousands, few decimals."""
    if isinstance(x, float) and x.is_integer() and abs(x) >= 100:
        x = int(x)
    if isinstance(x, int):
        return f"{x:,}".replace(",", " ")
    if abs(x) >= 100:
        return f"{x:,.0f}".replace(",", " ")
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return f"{x:.3f}".rstrip("0").rstrip(".") if x else "0"


def a(name: str) -> str:
    """An assumption as it appears in a formula."""
    value = globals()[name]
    return f"{fmt(value) if not isinstance(value, tuple) else value} {name}"


def ceil(x: float) -> int:
    return max(0, math.ceil(round(x, 9)))


# --- The model ---------------------------------------------------------------------------------


class Row:
    """One computed quantity: what, formula with its inputs, value."""

    def __init__(self, what: str, formula: str, value):
        self.what, self.formula, self.value = what, formula, value


def gateway(f: dict, users: int) -> tuple:
    """Gateway pods for `users`: every bound, the binding one, the pods."""
    sessions = users * SESSIONS_PER_USER
    peak = PEAK_NOTIFICATIONS_PER_SEC * users / USERS
    kb = max(f["kb_raw"], f["kb_sockjs"], key=lambda g: g.value)
    pod_bytes = GATEWAY_POD_MEMORY_MIB * 1024 * 1024
    by_memory = math.floor((pod_bytes * MEMORY_HEADROOM - f["base_rss"].value * 1024) / (kb.value * 1000))
    by_fds = math.floor(POD_FD_LIMIT * FD_HEADROOM / FDS_PER_SESSION)
    core_scale = GATEWAY_POD_CORES / f["load_cpus"].value
    bcast_pod = f["bcast_rate"].value * core_scale
    by_broadcast = math.floor(BROADCAST_DEADLINE_SECS * bcast_pod * CPU_HEADROOM)
    us = max(f["burst_us"], f["paced_us"], key=lambda g: g.value)
    per_pod_deliveries = GATEWAY_POD_CORES * 1e6 * CPU_HEADROOM / us.value
    deliveries = peak * SESSIONS_PER_USER
    ratios = {
        "memory": sessions / by_memory,
        "descriptors": sessions / by_fds,
        "broadcast fan-out": sessions / by_broadcast,
        "CPU at peak": deliveries / per_pod_deliveries,
    }
    bounds = {name: ceil(ratio) for name, ratio in ratios.items()}
    binding = max(ratios, key=lambda k: ratios[k])
    pods = max(1, bounds[binding]) + SPARE_PODS
    rows = [
        Row("sessions", f"{fmt(users)} users × {a('SESSIONS_PER_USER')}", sessions),
        Row("sessions per gateway pod, memory",
            f"({fmt(GATEWAY_POD_MEMORY_MIB)} MiB GATEWAY_POD_MEMORY_MIB × {a('MEMORY_HEADROOM')} − "
            f"{f['base_rss']} base RSS) ÷ {kb} per session (the larger transport)", by_memory),
        Row("sessions per gateway pod, descriptors",
            f"{a('POD_FD_LIMIT')} × {a('FD_HEADROOM')} ÷ {a('FDS_PER_SESSION')}", by_fds),
        Row("broadcast deliveries/s per gateway pod",
            f"{f['bcast_rate']} × {a('GATEWAY_POD_CORES')} ÷ {f['load_cpus']}", bcast_pod),
        Row("sessions per gateway pod, broadcast fan-out",
            f"{a('BROADCAST_DEADLINE_SECS')} s × {fmt(bcast_pod)}/s × {a('CPU_HEADROOM')}", by_broadcast),
        Row("personal deliveries/s at peak",
            f"{fmt(peak)} notifications/s × {a('SESSIONS_PER_USER')}", deliveries),
        Row("deliveries/s per gateway pod, CPU",
            f"{a('GATEWAY_POD_CORES')} × 1 000 000 µs × {a('CPU_HEADROOM')} ÷ {us} per delivery "
            "(the larger of burst and paced)", per_pod_deliveries),
        Row("gateway pods for memory", f"{fmt(sessions)} ÷ {fmt(by_memory)}", bounds["memory"]),
        Row("gateway pods for descriptors", f"{fmt(sessions)} ÷ {fmt(by_fds)}", bounds["descriptors"]),
        Row("gateway pods for the broadcast", f"{fmt(sessions)} ÷ {fmt(by_broadcast)}", bounds["broadcast fan-out"]),
        Row("gateway pods for CPU at peak", f"{fmt(deliveries)} ÷ {fmt(per_pod_deliveries)}", bounds["CPU at peak"]),
        Row("gateway pods", f"max of the above ({binding}) + {a('SPARE_PODS')}", pods),
    ]
    active = pods - SPARE_PODS
    rows.append(Row("sessions per pod with one pod lost (WS_MAX_CONNECTIONS at least)",
                    f"{fmt(sessions)} ÷ {fmt(active)} pods", ceil(sessions / active)))
    rows.append(Row("broadcast to everyone, PUBLISH → last session, s",
                    f"{fmt(sessions)} ÷ {fmt(active)} pods ÷ {fmt(bcast_pod)}/s", sessions / active / bcast_pod))
    return rows, pods, binding, ratios[binding]


def redis(f: dict, users: int, gateway_pods: int) -> tuple:
    """One Redis node while it carries the peak, else a cluster; a Redis process runs its
    commands on one core, so one core's worth of the measured CPU per message is its ceiling."""
    peak = PEAK_NOTIFICATIONS_PER_SEC * users / USERS
    fanout = min(SESSIONS_PER_USER, gateway_pods)
    out = peak * fanout
    node_cap = 1e6 / f["single_us"].value * REDIS_HEADROOM
    shard_cap = 1e6 / f["cluster_us"].value * REDIS_HEADROOM
    skew = f["shard_skew"].value
    load = out / node_cap
    shards = 1 if load <= 1 else max(REDIS_MIN_SHARDS, ceil(out * skew / shard_cap))
    floor_shards = max(REDIS_MIN_SHARDS, ceil(out * skew / (f["shard_rate"].value * REDIS_HEADROOM)))
    rows = [
        Row("messages Redis receives at peak, /s", f"{fmt(peak)} notifications/s, one (S)PUBLISH each", peak),
        Row("messages Redis delivers at peak, /s",
            f"{fmt(peak)} × min({a('SESSIONS_PER_USER')}, {fmt(gateway_pods)} pods): a user's channel reaches "
            "only the pods holding that user's sessions", out),
        Row("delivered messages/s one node takes",
            f"1 000 000 µs ÷ {f['single_us']} per message × {a('REDIS_HEADROOM')}", node_cap),
        Row("delivered messages/s one cluster shard takes",
            f"1 000 000 µs ÷ {f['cluster_us']} per message (masters' and replicas' CPU together) × "
            f"{a('REDIS_HEADROOM')}", shard_cap),
        Row("Redis shards",
            f"1 if {fmt(out)} ≤ {fmt(node_cap)}, else max({a('REDIS_MIN_SHARDS')}, "
            f"⌈{fmt(out)} × {f['shard_skew']} skew ÷ {fmt(shard_cap)}⌉)", shards),
        Row("Redis shards if a shard did only what it did on the bench machine",
            f"max({REDIS_MIN_SHARDS}, ⌈{fmt(out)} × {fmt(skew)} ÷ ({f['shard_rate']} × {a('REDIS_HEADROOM')})⌉)",
            floor_shards),
        Row("broadcast: messages from Redis", "one per gateway pod (every pod subscribes the time-deal channel)",
            gateway_pods),
        Row("Redis CPU at peak, cores",
            f"{fmt(out)} messages × {f['cluster_us']} per message (its PUBLISH included)",
            out * f["cluster_us"].value / 1e6),
    ]
    return rows, shards, load


def ingest_pods_for(f: dict, users: int) -> tuple:
    peak = PEAK_NOTIFICATIONS_PER_SEC * users / USERS
    per_pod = f["ingest_rate"].value * INGEST_POD_CORES / f["throughput_cpus"].value * CPU_HEADROOM
    return peak, per_pod, max(1, ceil(peak / per_pod))


def kafka(f: dict, users: int) -> tuple:
    peak, per_pod, needed = ingest_pods_for(f, users)
    pods = needed + SPARE_PODS
    _, _, later = ingest_pods_for(f, users * PARTITION_GROWTH)
    wanted = max(pods, later + SPARE_PODS)
    partitions = next((p for p in PARTITION_COUNTS if p >= wanted), wanted)
    cores = peak * f["e2e_ingest_us"].value / 1e6
    rows = [
        Row("events/s per ingest pod",
            f"{f['ingest_rate']} × {a('INGEST_POD_CORES')} ÷ {f['throughput_cpus']} × {a('CPU_HEADROOM')}", per_pod),
        Row("ingest pods", f"⌈{fmt(peak)} ÷ {fmt(per_pod)}⌉ + {a('SPARE_PODS')}", pods),
        Row("ingest CPU at peak, cores (cross-check)", f"{fmt(peak)} × {f['e2e_ingest_us']} per event", cores),
        Row("partitions per input topic",
            f"≥ ingest pods at {a('PARTITION_GROWTH')} × the users ({fmt(later)} + {SPARE_PODS}), "
            "rounded up to one of PARTITION_COUNTS", partitions),
    ]
    return rows, pods, partitions, peak / per_pod


def mysql(f: dict, users: int) -> tuple:
    avg = AVG_NOTIFICATIONS_PER_SEC * users / USERS * ROWS_PER_NOTIFICATION
    peak = PEAK_NOTIFICATIONS_PER_SEC * users / USERS * ROWS_PER_NOTIFICATION
    cap = f["insert_rate"].value * MYSQL_PRIMARY_SCALE * MYSQL_HEADROOM
    at_peak, at_avg = max(1, ceil(peak / cap)), max(1, ceil(avg / cap))
    peak_per_user = PEAK_NOTIFICATIONS_PER_SEC * ROWS_PER_NOTIFICATION / USERS
    avg_per_user = AVG_NOTIFICATIONS_PER_SEC * ROWS_PER_NOTIFICATION / USERS
    per_day = avg * 86_400 * f["bytes_per_row"].value
    rows = [
        Row("rows/s on average", f"{fmt(AVG_NOTIFICATIONS_PER_SEC * users / USERS)} × {a('ROWS_PER_NOTIFICATION')}", avg),
        Row("rows/s at peak", f"{fmt(PEAK_NOTIFICATIONS_PER_SEC * users / USERS)} × {a('ROWS_PER_NOTIFICATION')}", peak),
        Row("rows/s one primary takes",
            f"{f['insert_rate']} × {a('MYSQL_PRIMARY_SCALE')} × {a('MYSQL_HEADROOM')}", cap),
        Row("primaries at peak", f"⌈{fmt(peak)} ÷ {fmt(cap)}⌉", at_peak),
        Row("primaries on average", f"⌈{fmt(avg)} ÷ {fmt(cap)}⌉", at_avg),
        Row("users from which the peak outgrows one primary", f"{fmt(cap)} ÷ {fmt(peak_per_user)} rows/s per user",
            math.floor(cap / peak_per_user)),
        Row("users from which the average outgrows one primary", f"{fmt(cap)} ÷ {fmt(avg_per_user)} rows/s per user",
            math.floor(cap / avg_per_user)),
        Row("MySQL CPU at peak, cores (cross-check)", f"{fmt(peak)} × {f['e2e_mariadb_us']} per event",
            peak * f["e2e_mariadb_us"].value / 1e6),
        Row("table growth per day on average, GB", f"{fmt(avg)} rows/s × 86 400 s × {f['bytes_per_row']}", per_day / 1e9),
    ]
    return rows, at_peak, peak / cap


def mysql_advice(primaries: int) -> str:
    if primaries <= 1:
        return "one primary"
    if primaries <= MYSQL_MAX_MANUAL_PARTITIONS:
        return f"partition by user id over {primaries} primaries"
    return f"a distributed MySQL-compatible store (≥ {primaries} primaries' worth)"


# Hardest to scale first: the first of these that has outgrown one unit is the bottleneck.
HARDNESS = ("MySQL primary", "Redis node", "ingest pod", "gateway pod")


def step(f: dict, users: int) -> dict:
    g_rows, g_pods, binding, g_load = gateway(f, users)
    r_rows, shards, r_load = redis(f, users, g_pods)
    k_rows, i_pods, partitions, i_load = kafka(f, users)
    m_rows, primaries, m_load = mysql(f, users)
    loads = {"MySQL primary": m_load, "Redis node": r_load, "ingest pod": i_load, "gateway pod": g_load}
    outgrown = [name for name in HARDNESS if loads[name] > 1]
    if outgrown:
        bottleneck = outgrown[0]
        why = f"needs {fmt(loads[bottleneck])}× one unit"
    else:
        bottleneck = max(loads, key=lambda k: loads[k])
        why = f"one unit at {loads[bottleneck] * 100:.0f} %"
    return {
        "users": users, "gateway": g_rows, "gateway_pods": g_pods, "binding": binding,
        "redis": r_rows, "shards": shards, "kafka": k_rows, "ingest_pods": i_pods,
        "partitions": partitions, "mysql": m_rows, "primaries": primaries, "loads": loads,
        "bottleneck": bottleneck, "why": why, "next": outgrown[1] if len(outgrown) > 1 else "—",
    }


# --- The document ------------------------------------------------------------------------------


def table(rows: list) -> list:
    out = ["| quantity | formula (inputs) | value |", "|---|---|---|"]
    for r in rows:
        value = r.value if isinstance(r.value, str) else fmt(r.value)
        out.append(f"| {r.what} | {r.formula} | {value} |")
    return out


def render(src: dict, f: dict, command: str, overrides: list) -> str:
    lines = [
        "# Capacity model",
        "",
        f"Generated by `{command}` from the benchmarks' results files; do not edit it by hand:",
        "run the benches, then the script again. Every measured figure below names its bench and",
        "the date of the run; every computed one shows its inputs.",
        "",
        "## Sources",
        "",
        "| bench | file | command | date | commit | CPUs | load average at start |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in src.values():
        d = s.doc
        rel = s.path.relative_to(ROOT) if s.path.is_relative_to(ROOT) else s.path
        lines.append(
            f"| {s.name} | `{rel}` | `{d.get('command') or BENCHES[s.name]}` | {d['date']} | {d['commit']} "
            f"| {fmt(s.number('machine.cpus'))} | {fmt(s.number('machine.load_average_at_start'))} |"
        )
    lines += [
        "",
        "The benches run on one machine, with the clients, Redis, MariaDB and the process",
        "measured sharing its cores (other work too: the load average says how much), so the",
        "rates below are floors of what a dedicated pod or server does.",
        "",
        "## Assumptions",
        "",
        "The inputs that are not measured, as named at the top of `scripts/scaling.py`"
        + (f" (overridden here: {', '.join(overrides)})." if overrides else "."),
        "",
        "| name | value | meaning |",
        "|---|---|---|",
    ]
    for name, meaning in ASSUMPTIONS.items():
        value = globals()[name]
        shown = ", ".join(fmt(v) for v in value) if isinstance(value, tuple) else fmt(value)
        lines.append(f"| `{name}` | {shown} | {meaning} |")
    lines += ["", "## Measured", "", "| figure | value | bench, date | key |", "|---|---|---|---|"]
    for fig in f.values():
        unit = f" {fig.unit}" if fig.unit else ""
        lines.append(f"| {fig.label} | {fmt(fig.value)}{unit} | {fig.source.cite()} | `{fig.key}` |")

    head = step(f, USERS)
    avg, peak = AVG_NOTIFICATIONS_PER_SEC, PEAK_NOTIFICATIONS_PER_SEC
    lines += [
        "",
        f"## {fmt(USERS)} users, {fmt(avg)} notifications/s (peak {fmt(peak)}/s), one broadcast to everyone",
        "",
        "### Gateway pods",
        "",
        "A pod is bounded by memory (sessions × RSS per session + the RSS at start), by",
        "descriptors, by CPU for the peak's deliveries, and by the time one broadcast takes to",
        "reach all its sessions at the fan-out rate measured on one gateway.",
        "",
    ]
    lines += table(head["gateway"])
    lines += [
        "",
        "Measured beside it: with broadcasts back to back, personal notifications' p99 rose from",
        f"{f['personal_p99']} to {f['personal_p99_bcast']}: a broadcast delays the personal",
        "deliveries of the pods it fans out on, which is why the fan-out bound keeps CPU in reserve.",
        "",
        "### Redis",
        "",
        "Each notification is one (S)PUBLISH to its user's channel; a sharded channel lives on one",
        "shard and reaches only the gateway pods subscribed to that user, so each pod receives",
        "only its own users' messages. A broadcast is one message per pod. The busiest shard",
        "carries more than the mean (the measured skew). Redis runs commands on one core, so a",
        "node or shard is sized by its CPU per message; the delivered rates measured on the bench",
        "machine, where every Redis process and the load generator shared its cores, are floors.",
        "",
    ]
    lines += table(head["redis"])
    lines += ["", "### Kafka partitions and ingest pods", ""]
    lines += table(head["kafka"])
    lines += [
        "",
        "Partitions cap the ingest pods that do work (one pod per partition at a time); create the",
        "topics with the count for the most pods planned, since adding partitions later moves keys.",
        "",
        "### MySQL write rate",
        "",
        "Each notification is one row; the measured rate is one primary taking multi-row",
        "`INSERT IGNORE` batches (the bench machine's disk and cores). While the peak exceeds one",
        "primary but the average does not, Kafka holds the backlog and latency grows during peaks;",
        "once the average exceeds it, the backlog never drains: the table must be partitioned by",
        "user id (every inbox query and the recovery query are by user id) or moved to a",
        "distributed MySQL-compatible store.",
        "",
    ]
    lines += table(head["mysql"])
    lines += [
        "",
        "### The headline",
        "",
        f"- gateway pods: **{head['gateway_pods']}** (bound by {head['binding']})",
        f"- Redis: **{'one node' if head['shards'] == 1 else str(head['shards']) + ' cluster shards'}**",
        f"- ingest pods: **{head['ingest_pods']}**, partitions per input topic: **{head['partitions']}**",
        f"- MySQL: **{mysql_advice(head['primaries'])}** at peak",
        f"- bottleneck: **{head['bottleneck']}** ({head['why']})",
        "",
        "## Growth in 10× steps",
        "",
        "Notification rates in proportion to the users (the headline's per-user rates). The",
        "bottleneck is the hardest-to-scale component that has outgrown one unit, in the order",
        f"{', '.join(HARDNESS)} (a MySQL primary needs a redesign to split, a Redis node a move",
        "to Redis Cluster and later resharding, pods only a replica count); while none has, the",
        "one closest to its unit's limit.",
        "",
        "| users | notifications/s avg / peak | sessions | gateway pods (bound) | Redis shards "
        "| ingest pods | partitions | MySQL peak rows/s → | bottleneck | next outgrown |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for users in GROWTH_USERS:
        s = step(f, users)
        peak_rows = PEAK_NOTIFICATIONS_PER_SEC * users / USERS * ROWS_PER_NOTIFICATION
        lines.append(
            f"| {fmt(users)} | {fmt(AVG_NOTIFICATIONS_PER_SEC * users / USERS)} / {fmt(PEAK_NOTIFICATIONS_PER_SEC * users / USERS)} "
            f"| {fmt(users * SESSIONS_PER_USER)} | {fmt(s['gateway_pods'])} ({s['binding']}) | {fmt(s['shards'])} "
            f"| {fmt(s['ingest_pods'])} | {fmt(s['partitions'])} | {fmt(peak_rows)}: {mysql_advice(s['primaries'])} "
            f"| {s['bottleneck']} ({s['why']}) | {s['next']} |"
        )
    lines += [
        "",
        "Load on one unit at each step (1.0 = one unit at its planned limit):",
        "",
        "| users | " + " | ".join(HARDNESS) + " |",
        "|---|" + "---|" * len(HARDNESS),
    ]
    for users in GROWTH_USERS:
        s = step(f, users)
        lines.append(f"| {fmt(users)} | " + " | ".join(fmt(s["loads"][n]) for n in HARDNESS) + " |")
    lines += [
        "",
        "Each cell is computed as in the headline section, with the users of its row; the",
        "formulas with their inputs for every step:",
    ]
    for users in GROWTH_USERS:
        s = step(f, users)
        lines += ["", f"<details><summary>{fmt(users)} users</summary>", ""]
        lines += table(s["gateway"] + s["redis"] + s["kafka"] + s["mysql"])
        lines += ["", "</details>"]
    lines += [
        "",
        "## End to end, for comparison",
        "",
        f"One of each process on one machine sustained {f['e2e_rate']} (p50 {f['e2e_p50']},",
        f"p99 {f['e2e_p99']}); CPU per event: ingest {f['e2e_ingest_us']}, gateway {f['e2e_gateway_us']},",
        f"MariaDB {f['e2e_mariadb_us']}, Redis {f['e2e_redis_us']}.",
        "",
        "## What this model does not cover",
        "",
        "- Kernel memory of sockets (buffers outside RSS) and Redis memory per subscribed channel:",
        "  not measured; `MEMORY_HEADROOM` stands in for the first.",
        "- Network bandwidth, Kafka brokers, reads of the inbox API (measured per endpoint above,",
        "  but no request rate is assumed) and reconnect storms after a pod is lost (each",
        f"  reconnect with `last-id` runs one recovery query; {f['recovery_ms'].label}: {f['recovery_ms']}).",
        "- Retention: the table grows by the figure above every day; the spec sets no retention.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "target" / "bench-results",
                        help="directory of the results files (default: target/bench-results)")
    parser.add_argument("--out", type=Path, default=ROOT / "SCALING.md", help="default: SCALING.md")
    parser.add_argument("--assume", action="append", default=[], metavar="NAME=VALUE",
                        help="override an assumption (repeatable)")
    args = parser.parse_args(argv)
    overrides = []
    for item in args.assume:
        name, _, value = item.partition("=")
        if name not in ASSUMPTIONS or not value:
            parser.error(f"--assume {item}: not NAME=VALUE with NAME one of {', '.join(ASSUMPTIONS)}")
        old = globals()[name]
        try:
            new = tuple(int(v) for v in value.split(",")) if isinstance(old, tuple) else type(old)(value)
        except ValueError:
            parser.error(f"--assume {item}: {value!r} is not a {type(old).__name__}")
        globals()[name] = new
        overrides.append(f"`{name}={value}`")
    try:
        sources = read_sources(args.results.resolve())
        figures = measured(sources)
    except InputError as err:
        print(f"scaling.py: cannot build the model:\n{err}", file=sys.stderr)
        return 2
    command = "python3 scripts/scaling.py" + "".join(f" {a_}" for a_ in argv)
    args.out.write_text(render(sources, figures, command, overrides))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
