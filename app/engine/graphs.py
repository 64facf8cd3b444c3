"""Graph teams as AutoGen `DiGraph`s: the one place that maps our edges to AutoGen's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from autogen_agentchat.base import ChatAgent
from autogen_agentchat.teams import DiGraph, DiGraphBuilder, DiGraphEdge, DiGraphNode

from app.engine.specs import GraphSpec


def _activation(spec: GraphSpec, node: str) -> Literal["all", "any"]:
    incoming = [e for e in spec.edges or [] if e.target == node]
    return "any" if any(e.activation == "any" for e in incoming) else "all"


def graph_of(spec: GraphSpec, names: Sequence[str]) -> DiGraph:
    """The graph alone (names, no agents): what validation checks."""
    nodes = {
        name: DiGraphNode(
            name=name,
            edges=[
                DiGraphEdge(target=e.target, condition=e.condition, activation_condition=e.activation)
                for e in spec.edges or []
                if e.source == name
            ],
            activation=_activation(spec, name),
        )
        for name in names
    }
    return DiGraph(nodes=nodes, default_start_node=spec.start)


def build_graph(spec: GraphSpec, agents: Sequence[ChatAgent]) -> tuple[list[ChatAgent], DiGraph]:
    builder = DiGraphBuilder()
    for agent in agents:
        builder.add_node(agent, activation=_activation(spec, agent.name))
    for e in spec.edges or []:
        builder.add_edge(e.source, e.target, condition=e.condition, activation_condition=e.activation)
    if spec.start is not None:
        builder.set_entry_point(spec.start)
    return builder.get_participants(), builder.build()
