/**
 * The little dense linear algebra the Fréchet distance needs, in float64 TypeScript (no tfjs:
 * tfjs has no eigendecomposition, and float32 is too coarse for a difference of traces).
 *
 * Matrices are row-major Float64Arrays of n * n values.
 *
 * Fréchet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; FID, Heusel et al. 2017):
 *
 *     d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})
 *
 * S1 S2 is not symmetric, so its square root is not taken directly. Instead, with A = S1^{1/2}
 * (symmetric PSD), A S2 A is symmetric PSD and similar to S1 S2 (A^{-1} (A S2 A) A = S1 S2 when
 * S1 is invertible; by continuity otherwise), so they share eigenvalues and
 *
 *     Tr((S1 S2)^{1/2}) = Tr((A S2 A)^{1/2}) = sum_i sqrt(lambda_i(A S2 A)).
 *
 * Both square roots come from the eigendecomposition of a symmetric matrix, computed with the
 * cyclic Jacobi method (rotations that zero one off-diagonal pair at a time; quadratically
 * convergent, unconditionally stable, accurate small eigenvalues). Eigenvalues that rounding
 * pushed slightly below zero are clamped to 0 before the square root.
 */

export interface SymmetricEigen {
  /** Eigenvalues, in the order of the columns of `vectors` (not sorted). */
  values: Float64Array;
  /** Eigenvectors as columns: vectors[r * n + c] is component r of eigenvector c. */
  vectors: Float64Array;
  sweeps: number;
}

/** Eigendecomposition of a symmetric matrix (only the upper triangle is assumed equal to the lower). */
export function symmetricEigen(matrix: ArrayLike<number>, n: number, maxSweeps = 100): SymmetricEigen {
  if (matrix.length !== n * n) throw new RangeError(`symmetricEigen: expected ${n * n} values, got ${matrix.length}`);
  const a = Float64Array.from(matrix);
  // Symmetrise exactly, so tiny asymmetries from accumulation order do not matter.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const m = 0.5 * (a[i * n + j] + a[j * n + i]);
      a[i * n + j] = m;
      a[j * n + i] = m;
    }
  }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  let scale = 0;
  for (let i = 0; i < n * n; i++) scale += a[i] * a[i];
  const tol = Number.EPSILON * Number.EPSILON * Math.max(scale, Number.MIN_VALUE);
  let sweeps = 0;
  for (; sweeps < maxSweeps; sweeps++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    if (off <= tol) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        // Rotation angle that zeroes a[p][q] (Golub & Van Loan, sym.schur2), stable form.
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i];
  return { values, vectors: v, sweeps };
}

/** A B for n x n row-major matrices. */
export function matMul(a: ArrayLike<number>, b: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += aik * b[k * n + j];
    }
  }
  return out;
}

/** V diag(f(lambda)) V^T from an eigendecomposition. */
function spectralApply(e: SymmetricEigen, n: number, f: (x: number) => number): Float64Array {
  const fv = Array.from(e.values, f);
  const out = new Float64Array(n * n);
  const v = e.vectors;
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += v[i * n + k] * fv[k] * v[j * n + k];
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/** The symmetric PSD square root of a symmetric PSD matrix (negative rounding noise clamped). */
export function sqrtmPsd(matrix: ArrayLike<number>, n: number): Float64Array {
  return spectralApply(symmetricEigen(matrix, n), n, (x) => Math.sqrt(Math.max(0, x)));
}

export function trace(matrix: ArrayLike<number>, n: number): number {
  let t = 0;
  for (let i = 0; i < n; i++) t += matrix[i * n + i];
  return t;
}

/** Tr((S1 S2)^{1/2}) through the symmetric form Tr((S1^{1/2} S2 S1^{1/2})^{1/2}). */
export function traceSqrtProduct(s1: ArrayLike<number>, s2: ArrayLike<number>, n: number): number {
  const a = sqrtmPsd(s1, n);
  const m = matMul(matMul(a, s2, n), a, n);
  const { values } = symmetricEigen(m, n);
  let t = 0;
  for (const x of values) t += Math.sqrt(Math.max(0, x));
  return t;
}

/** Mean and covariance of a set of vectors. */
export interface GaussianStats {
  dim: number;
  count: number;
  mean: Float64Array;
  /** dim x dim, unbiased (divided by count - 1), as numpy.cov and the FID reference code. */
  cov: Float64Array;
}

/** Mean and unbiased covariance of `rows` vectors of `dim` values (row-major). */
export function gaussianStats(x: ArrayLike<number>, rows: number, dim: number): GaussianStats {
  if (rows < 2) throw new RangeError(`gaussianStats needs at least 2 rows, got ${rows}`);
  if (x.length < rows * dim) throw new RangeError(`gaussianStats: ${rows} x ${dim} needs ${rows * dim} values, got ${x.length}`);
  const mean = new Float64Array(dim);
  for (let r = 0; r < rows; r++) for (let j = 0; j < dim; j++) mean[j] += x[r * dim + j];
  for (let j = 0; j < dim; j++) mean[j] /= rows;
  const cov = new Float64Array(dim * dim);
  const d = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < dim; j++) d[j] = x[r * dim + j] - mean[j];
    for (let i = 0; i < dim; i++) {
      const di = d[i];
      if (di === 0) continue;
      for (let j = i; j < dim; j++) cov[i * dim + j] += di * d[j];
    }
  }
  for (let i = 0; i < dim; i++) {
    for (let j = i; j < dim; j++) {
      const c = cov[i * dim + j] / (rows - 1);
      cov[i * dim + j] = c;
      cov[j * dim + i] = c;
    }
  }
  return { dim, count: rows, mean, cov };
}

/** Squared Fréchet distance between two Gaussians (see the header of this file). */
export function frechetDistance(a: GaussianStats, b: GaussianStats): number {
  if (a.dim !== b.dim) throw new RangeError(`frechetDistance: dimensions differ (${a.dim} vs ${b.dim})`);
  const n = a.dim;
  let meanTerm = 0;
  for (let i = 0; i < n; i++) meanTerm += (a.mean[i] - b.mean[i]) ** 2;
  const d = meanTerm + trace(a.cov, n) + trace(b.cov, n) - 2 * traceSqrtProduct(a.cov, b.cov, n);
  // Rounding can leave -1e-12 for identical sets; a distance is never negative.
  return Math.max(0, d);
}
