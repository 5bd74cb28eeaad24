// Analytic floating-point operation counts for the sine nets (see README.md, "FLOP model").
// A multiply-add counts 2. Only matrix products and operations on weight-sized tensors are counted;
// activation-sized element-wise work (ReLU, bias adds, the loss) is at most a few percent and left out.

/** Layer shapes [in, out] of a net with input width `input` and units per layer. */
export function layerShapes(input, units) {
  const shapes = [];
  let fanIn = input;
  for (const u of units) {
    shapes.push([fanIn, u]);
    fanIn = u;
  }
  return shapes;
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/**
 * FLOPs of one lifetime (one episode), forward graph only:
 *   front(T·B) + T · (tail forward + local update) + query forward.
 * net: { shapes, rln, rule: 'oja' | 'sgd', outputs }; stream: { steps, batch, query }.
 */
export function lifetimeFlops(net, stream) {
  const front = net.shapes.slice(0, net.rln);
  const tail = net.shapes.slice(net.rln);
  const mm = (rows, layers) => sum(layers.map(([i, o]) => 2 * rows * i * o));
  const weights = sum(tail.map(([i, o]) => i * o));
  const B = stream.batch;
  const forward = mm(B, tail);
  let update;
  if (net.rule === 'sgd') {
    // Inner gradient: dL/dW of every plastic layer plus dL/da for all but the first, then W -= lr·g.
    update = mm(B, tail) + mm(B, tail.slice(1)) + 2 * weights;
  } else {
    // Feedback f = relu(B e + c), Hebbian term postᵀ·pre, Oja decay and rate: (Σpost²)·W, −, ·P, +W.
    update = sum(tail.map(([, o]) => 2 * B * net.outputs * o)) + mm(B, tail) + 4 * weights;
  }
  return {
    front: mm(stream.steps * B, front),
    step: forward + update,
    steps: stream.steps * (forward + update),
    query: mm(stream.query, net.shapes),
    total: mm(stream.steps * B, front) + stream.steps * (forward + update) + mm(stream.query, net.shapes),
  };
}

/** One second-order meta-step of E episodes: the forward graph and its backward (≈ 2× forward). */
export function metaStepFlops(net, stream, episodes) {
  return 3 * episodes * lifetimeFlops(net, stream).total;
}

/**
 * The sine evaluation protocol (no meta-gradient) for `runs` runs: each run is streamed twice
 * (continual and i.i.d. order), and the query set is scored after each function and at the end.
 */
export function evalFlops(net, stream, runs, functions) {
  const l = lifetimeFlops(net, stream);
  const perOrder = l.front + l.steps + (functions + 1) * l.query;
  return 2 * runs * perOrder;
}
