/**
 * Adam's update loop as a small WebAssembly SIMD kernel (two values per instruction, f64x2),
 * with exactly the arithmetic of the JS loop in trainer/optimizers.ts: every value promoted to
 * float64, m' = b1*m + c1*g, v' = b2*v + (c2*g)*g, w' = w - (alpha*m') / (sqrt(v') + eps), each
 * stored back rounded to float32 (m' and v' are used unrounded, as in JS). IEEE-754 float64
 * multiplication, addition, division and square root are correctly rounded in both, WebAssembly
 * keeps subnormals and rounds to nearest on demotion, like a Float32Array store: the same bits.
 * The update is bound by its division and square root, which the kernel issues for two values
 * at a time.
 *
 * The module is assembled below from its instructions (no toolchain needed); the text form:
 *
 *   (func $adam (param $w i32) (param $g i32) (param $m i32) (param $v i32) (param $pairs i32)
 *         (param $alpha f64) (param $b1 f64) (param $b2 f64) (param $c1 f64) (param $c2 f64) (param $eps f64)
 *     ;; splat the six constants, then for off = 0; off < pairs * 8; off += 8 (two float32 per array):
 *     ;;   G  = promote(load64_zero(g + off))
 *     ;;   MI = B1 * promote(load64_zero(m + off)) + C1 * G
 *     ;;   VI = B2 * promote(load64_zero(v + off)) + (C2 * G) * G
 *     ;;   store64_lane(m + off, demote(MI)); store64_lane(v + off, demote(VI))
 *     ;;   store64_lane(w + off, demote(promote(load64_zero(w + off)) - (ALPHA * MI) / (sqrt(VI) + EPS)))
 *   )   ;; exported under the name adam
 */

const SIMD = 0xfd;
const op = {
  block: 0x02,
  loop: 0x03,
  br: 0x0c,
  brIf: 0x0d,
  end: 0x0b,
  get: 0x20,
  set: 0x21,
  i32Const: 0x41,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Mul: 0x6c,
} as const;
/** SIMD opcodes (after the 0xfd prefix, as unsigned LEB128). */
const simd = {
  load64Zero: [0x5d],
  store64Lane: [0x5b],
  f64x2Splat: [0x14],
  promoteLow: [0x5f],
  demoteZero: [0x5e],
  sqrt: [0xef, 0x01],
  add: [0xf0, 0x01],
  sub: [0xf1, 0x01],
  mul: [0xf2, 0x01],
  div: [0xf3, 0x01],
} as const;

function kernelBytes(): Uint8Array<ArrayBuffer> {
  // Locals: params 0-10, then v128 11-19, i32 20-21.
  const [W, Gp, M, V, PAIRS, ALPHA_P, B1_P, B2_P, C1_P, C2_P, EPS_P] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const [ALPHA, B1, B2, C1, C2, EPS, G, MI, VI] = [11, 12, 13, 14, 15, 16, 17, 18, 19];
  const [OFF, END] = [20, 21];
  const code: number[] = [];
  const get = (i: number) => code.push(op.get, i);
  const set = (i: number) => code.push(op.set, i);
  const s = (o: readonly number[], ...imm: number[]) => code.push(SIMD, ...o, ...imm);
  const addr = (base: number) => {
    get(base);
    get(OFF);
    code.push(op.i32Add);
  };
  const load = (base: number) => {
    addr(base);
    s(simd.load64Zero, 3, 0); // align 2^3, offset 0
    s(simd.promoteLow);
  };
  const storeTop = () => {
    s(simd.demoteZero);
    s(simd.store64Lane, 3, 0, 0); // memarg, lane 0
  };
  for (const [p, l] of [[ALPHA_P, ALPHA], [B1_P, B1], [B2_P, B2], [C1_P, C1], [C2_P, C2], [EPS_P, EPS]] as const) {
    get(p);
    s(simd.f64x2Splat);
    set(l);
  }
  get(PAIRS);
  code.push(op.i32Const, 8, op.i32Mul);
  set(END);
  code.push(op.block, 0x40, op.loop, 0x40);
  get(OFF);
  get(END);
  code.push(op.i32GeU, op.brIf, 1);
  load(Gp);
  set(G);
  get(B1);
  load(M);
  s(simd.mul);
  get(C1);
  get(G);
  s(simd.mul);
  s(simd.add);
  set(MI);
  get(B2);
  load(V);
  s(simd.mul);
  get(C2);
  get(G);
  s(simd.mul);
  get(G);
  s(simd.mul);
  s(simd.add);
  set(VI);
  addr(M);
  get(MI);
  storeTop();
  addr(V);
  get(VI);
  storeTop();
  addr(W);
  load(W);
  get(ALPHA);
  get(MI);
  s(simd.mul);
  get(VI);
  s(simd.sqrt);
  get(EPS);
  s(simd.add);
  s(simd.div);
  s(simd.sub);
  storeTop();
  get(OFF);
  code.push(op.i32Const, 8, op.i32Add);
  set(OFF);
  code.push(op.br, 0, op.end, op.end, op.end);

  const body = [2, 9, 0x7b, 2, 0x7f, ...code]; // locals: 9 x v128, 2 x i32
  const uleb = (n: number): number[] => {
    const out: number[] = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
  const str = (t: string) => [t.length, ...[...t].map((c) => c.charCodeAt(0))];
  const funcBody = [...uleb(body.length), ...body];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 11, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7c, 0x7c, 0x7c, 0x7c, 0x7c, 0x7c, 0]),
    ...section(2, [1, ...str('e'), ...str('mem'), 0x02, 0x00, 1]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...str('adam'), 0x00, 0]),
    ...section(10, [1, ...funcBody]),
  ]);
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled kernel, or null where WebAssembly SIMD is unavailable (the JS loop is used then). */
function kernelModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = typeof WebAssembly === 'object' ? new WebAssembly.Module(kernelBytes()) : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

type AdamFn = (w: number, g: number, m: number, v: number, pairs: number, alpha: number, b1: number, b2: number, c1: number, c2: number, eps: number) => void;

/**
 * Adam's four arrays (weights, gradient, m, v) of one net in one WebAssembly memory of their
 * own, as Float32Array views (never detached: the memory never grows), and the kernel over them.
 */
export class AdamKernel {
  readonly w: Float32Array;
  readonly g: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  private readonly fn: AdamFn;
  private readonly offsets: number[];

  private constructor(mod: WebAssembly.Module, readonly size: number) {
    const bytes = (Math.ceil((size * 4) / 16) * 16);
    const mem = new WebAssembly.Memory({ initial: Math.ceil((4 * bytes) / 65536) + 1 });
    const inst = new WebAssembly.Instance(mod, { e: { mem } });
    this.fn = inst.exports.adam as AdamFn;
    this.offsets = [0, bytes, 2 * bytes, 3 * bytes];
    const view = (i: number) => new Float32Array(mem.buffer, this.offsets[i], size);
    [this.w, this.g, this.m, this.v] = [view(0), view(1), view(2), view(3)];
  }

  /** A kernel for `size` values, or null where WebAssembly SIMD is unavailable. */
  static create(size: number): AdamKernel | null {
    const mod = kernelModule();
    return mod ? new AdamKernel(mod, size) : null;
  }

  /** The update over this.w with this.g, this.m, this.v; the last value of an odd size is left to the caller. */
  run(alpha: number, beta1: number, beta2: number, c1: number, c2: number, epsilon: number): number {
    const pairs = this.size >>> 1;
    const [w, g, m, v] = this.offsets as [number, number, number, number];
    this.fn(w, g, m, v, pairs, alpha, beta1, beta2, c1, c2, epsilon);
    return pairs * 2;
  }
}
