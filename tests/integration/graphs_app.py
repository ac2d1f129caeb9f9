"""A LangGraph application for the end-to-end tests, and its child-process entry points.

The graph: start → (a conditional edge: both branches, or the left one alone)
→ left ‖ right (parallel: two tasks write in one step) → review (asks a human
through ``interrupt()``) → finish.

    python graphs_app.py resume DB THREAD ANSWER   resume an interrupted thread, print its final state
    python graphs_app.py slow DB THREAD MARKER     run a thread whose review step writes MARKER and
                                                   then hangs (to be killed mid-step)
"""

from __future__ import annotations

import json
import operator
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from eventkernel.integrations.langgraph import EventKernelSaver


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    route: str


def build(checkpointer: Any, *, slow_marker: str | None = None) -> Any:
    def review(state: State) -> State:
        if slow_marker is not None:
            Path(slow_marker).write_text("in review")
            time.sleep(120)
        answer = interrupt({"question": "approve?", "log": state["log"]})
        return {"log": [f"review:{answer}"]}

    builder = StateGraph(State)
    builder.add_node("start", lambda s: {"log": ["start"]})
    builder.add_node("left", lambda s: {"log": ["left"]})
    builder.add_node("right", lambda s: {"log": ["right"]})
    builder.add_node("review", review)
    builder.add_node("finish", lambda s: {"log": ["finish"]})
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", lambda s: ["left", "right"] if s.get("route") == "both" else ["left"],
                                  ["left", "right"])
    builder.add_edge("left", "review")
    builder.add_edge("right", "review")
    builder.add_edge("review", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer)


def config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def main(argv: list[str]) -> None:
    what, path, thread, arg = argv
    with EventKernelSaver.from_conn_string(path) as saver:
        if what == "resume":
            result = build(saver).invoke(Command(resume=arg), config(thread))
            print(json.dumps(result), flush=True)
        elif what == "slow":
            # durability="sync": each checkpoint is saved before the next step starts (LangGraph's
            # default, "async", saves it while the next step runs: a kill there loses that step)
            build(saver, slow_marker=arg).invoke({"log": [], "route": "both"}, config(thread), durability="sync")
        else:
            raise SystemExit(f"unknown program {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
