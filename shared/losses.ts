/**
 * GAN losses on D's logits (Goodfellow et al. 2014, eq. 1 and section 3). softplus(-l) is
 * -log sigmoid(l) and softplus(l) is -log(1 - sigmoid(l)), computed without underflow.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GLoss } from './config.ts';

/**
 * D's binary cross-entropy: real rows labelled 1 (or 1 - smoothing, one-sided label
 * smoothing), generated rows labelled 0. Sum of the two means, as in the paper's value function.
 */
export function discriminatorLoss(realLogits: tf.Tensor, fakeLogits: tf.Tensor, labelSmoothing: number): tf.Scalar {
  return tf.tidy(() => {
    const target = 1 - labelSmoothing;
    let realTerm = tf.softplus(tf.neg(realLogits));
    if (labelSmoothing > 0) {
      realTerm = tf.add(tf.mul(realTerm, target), tf.mul(tf.softplus(realLogits), 1 - target));
    }
    return tf.add(tf.mean(realTerm), tf.mean(tf.softplus(fakeLogits))) as tf.Scalar;
  });
}

/**
 * G's loss: 'minimax' minimises log(1 - D(G(z))) (the paper's value function), which saturates
 * early in training; 'non-saturating' minimises -log D(G(z)), the paper's practical advice.
 */
export function generatorLoss(fakeLogits: tf.Tensor, kind: GLoss): tf.Scalar {
  return tf.tidy(() =>
    kind === 'minimax' ? (tf.neg(tf.mean(tf.softplus(fakeLogits))) as tf.Scalar) : (tf.mean(tf.softplus(tf.neg(fakeLogits))) as tf.Scalar),
  );
}
