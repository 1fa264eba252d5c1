"""The Flower engine of ``benchmarks/vs_flower.py``: Flower's simulation engine (Ray backend) running
pwffsim's own local update. Imported only in the Flower modes (``pip install 'pwffsim[bench]'``).

* 20 supernodes, one per pwffsim client (``partition-id`` = client index); the ServerApp first asks
  every node its partition id (one QUERY message each; one node also returns the initial global part),
  so that each round it can send the TRAIN messages to the nodes of the plan's clients.
* ClientApp ``train``: the actor's Learner (built once per actor process, on its first message) runs
  the client's TrainJob; the reply is the trained global part, weighted by ``num-examples``; the personal
  part stays on the node, in ``context.state`` (Flower's stateful-client mechanism).
* ServerApp: Flower's own ``FedAvg`` (Message API) over the global part, ``fraction_evaluate = 0`` (no
  federated evaluation); only its node sampling is replaced by the plan.
"""
from __future__ import annotations

import time

try:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit(f"the Flower engines need flwr[simulation]: pip install 'pwffsim[bench]' ({exc})") from None

import _engines as E  # by name: Flower's Ray backend passes this sys.path on to its actors

# ---------------------------------------------------------------------------- ClientApp (in the actors)
_ACTOR: dict = {}


def _actor(overrides: tuple[str, ...]):
    """This actor process's Learner and split of the state, built on its first message."""
    if _ACTOR.get("key") != overrides:
        from pwffsim.sim.builders import build_learner

        sc = E.scenario(list(overrides))
        learner = build_learner(sc)
        _ACTOR.update(key=overrides, learner=learner,
                      split=E.Split(sc, learner.parameter_group, learner.initial_state()))
    return _ACTOR["learner"], _ACTOR["split"]


client_app = ClientApp()


@client_app.query()
def _query(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    _, split = _actor(tuple(cfg["overrides"]))
    content = RecordDict({"config": ConfigRecord({"partition-id": int(context.node_config["partition-id"])})})
    if cfg["want-init"]:
        content["arrays"] = ArrayRecord(split.initial_global)
    return Message(content, reply_to=msg)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    learner, split = _actor(tuple(cfg["overrides"]))
    glob = msg.content["arrays"].to_torch_state_dict()
    personal = context.state["personal"].to_torch_state_dict() if "personal" in context.state else None
    entry = {"client": int(context.node_config["partition-id"]), "seed": int(cfg["seed"]),
             "pref_help": float(cfg["pref-help"])}
    res = learner.run(split.job(int(cfg["round"]), entry, glob, personal))
    context.state["personal"] = ArrayRecord(split.personal(res.state))
    metrics = MetricRecord({"num-examples": int(res.num_samples), "train-loss": float(res.train_loss)})
    return Message(RecordDict({"arrays": ArrayRecord(split.glob(res.state)), "metrics": metrics}), reply_to=msg)


# ---------------------------------------------------------------------------- ServerApp (main process)
class PlannedFedAvg(FedAvg):
    """Flower's FedAvg; each round's nodes are the plan's clients (not a random sample)."""

    def __init__(self, plan: list[list[dict]], node_of: dict[int, int], overrides: list[str]):
        super().__init__(fraction_evaluate=0.0)
        self.plan, self.node_of, self.overrides = plan, node_of, overrides
        self.client_of = {n: k for k, n in node_of.items()}
        self.round_ends: list[float] = []
        self.trained: list[list[int]] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        r = server_round - 1
        return [Message(RecordDict({"arrays": arrays, "config": ConfigRecord(
                    {"server-round": server_round, "round": r, "seed": e["seed"], "pref-help": e["pref_help"],
                     "overrides": self.overrides})}),
                    message_type=MessageType.TRAIN, dst_node_id=self.node_of[e["client"]])
                for e in self.plan[r]]

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        for m in replies:
            if m.has_error():
                raise RuntimeError(f"a Flower client failed: {m.error.reason}")
            self.trained.append([server_round - 1, self.client_of[m.metadata.src_node_id]])
        out = super().aggregate_train(server_round, replies)
        self.round_ends.append(time.perf_counter())
        return out


def _nodes(grid: Grid, count: int, timeout_s: float = 120.0) -> list[int]:
    """The ``count`` node ids, once they are all registered (as Flower's own node sampling waits)."""
    t_end = time.monotonic() + timeout_s
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() > t_end:
            raise RuntimeError(f"only {len(nodes)} of {count} Flower nodes registered")
        time.sleep(0.05)
    return nodes


def _discover(grid: Grid, overrides: list[str], count: int) -> tuple[dict[int, int], ArrayRecord]:
    """client (partition id) -> node id, and the initial global part (from the first node)."""
    nodes = _nodes(grid, count)
    msgs = [Message(RecordDict({"config": ConfigRecord({"overrides": overrides, "want-init": i == 0})}),
                    message_type=MessageType.QUERY, dst_node_id=n) for i, n in enumerate(nodes)]
    node_of, init = {}, None
    for m in grid.send_and_receive(msgs):
        if m.has_error():
            raise RuntimeError(f"a Flower client failed: {m.error.reason}")
        node_of[int(m.content["config"]["partition-id"])] = m.metadata.src_node_id
        if "arrays" in m.content:
            init = m.content["arrays"]
    return node_of, init


_SERVER: dict = {}
server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    plan, overrides = _SERVER["plan"], _SERVER["overrides"]
    node_of, init = _discover(grid, overrides, _SERVER["nodes"])
    strategy = PlannedFedAvg(plan, node_of, overrides)
    result = strategy.start(grid=grid, initial_arrays=init, num_rounds=len(plan))
    _SERVER.update(round_ends=strategy.round_ends, trained=sorted(strategy.trained), final=result.arrays)


def run_flower(overrides: list[str], plan: list[list[dict]], actors: int) -> dict:
    """The plan through Flower's simulation engine with ``actors`` Ray actors training at once (Ray gets
    max(2, actors) CPUs, each ClientApp that divided by ``actors``)."""
    cpus = max(2, actors)
    nodes = E.scenario(overrides).devices.count
    _SERVER.update(plan=plan, overrides=list(overrides), nodes=nodes)
    backend_config = {"client_resources": {"num_cpus": cpus / actors, "num_gpus": 0.0},
                      # "local": always a new Ray instance (never one another program started here)
                      "init_args": {"num_cpus": cpus, "address": "local"}}
    run_simulation(server_app=server_app, client_app=client_app,
                   num_supernodes=nodes, backend_config=backend_config)
    if "final" not in _SERVER:
        raise RuntimeError("the Flower ServerApp did not finish (see its log above)")
    l1 = sum(float(abs(a.astype("float64")).sum()) for a in _SERVER["final"].to_numpy_ndarrays())
    return {"round_ends": _SERVER["round_ends"], "trained": _SERVER["trained"], "global_l1": l1}
