/** A finite labelled or unlabelled set of samples, row-major, values scaled to [-1, 1]. */
export interface Dataset {
  name: string;
  x: Float32Array; // n * dim floats
  n: number;
  dim: number; // product of shape
  shape: number[]; // e.g. [28, 28, 1] for images, [2] for 2-D points
  labels?: Int32Array; // class id per row, when the source has labels
  numClasses?: number; // e.g. 10
}

/** 2-D Gaussian mixture with equal weights. */
export interface MixtureSpec {
  name: 'ring8' | 'grid25';
  means: Float32Array; // k * 2
  k: number;
  std: number;
}

export type DataSource =
  | { kind: 'finite'; spec: string; train: Dataset; heldOut: Dataset }
  | { kind: 'mixture'; spec: string; mixture: MixtureSpec; shape: [2]; dim: 2 };
