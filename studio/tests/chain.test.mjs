// The causal tree Studio draws for an event's correlation: pure logic, no browser.

import { test } from "node:test";
import assert from "node:assert/strict";
import { causalTree } from "../src/pages/chain.js";

const shape = (nodes) => nodes.map((n) => [n.event.id, shape(n.children)]);

test("events hang under their cause, in commit order; unknown causes are roots", () => {
  const events = [
    { id: "a", causation_id: null },
    { id: "b", causation_id: "a" },
    { id: "c", causation_id: "a" },
    { id: "d", causation_id: "c" },
    { id: "e", causation_id: "gone" }, // its cause expired or is not ours to see
    { id: "f", causation_id: "f" }, // a self-reference is a root, not a loop
  ];
  assert.deepEqual(shape(causalTree(events)), [
    ["a", [["b", []], ["c", [["d", []]]]]],
    ["e", []],
    ["f", []],
  ]);
  assert.deepEqual(causalTree([]), []);
});
