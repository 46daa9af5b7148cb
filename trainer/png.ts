import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { deflateSync } from 'node:zlib';

export interface Image {
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  pixels: Uint8Array; // row-major, height * width * channels
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO-HDLC, the one PNG and gzip use). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  out.set(data, 8);
  // The CRC covers the type and the data, not the length.
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const COLOR_TYPE = { 1: 0, 3: 2, 4: 6 } as const; // grey, RGB, RGBA

/** An 8-bit PNG, unfiltered (filter 0 on every row): the images here are small. */
export function encodePng(width: number, height: number, channels: 1 | 3 | 4, pixels: Uint8Array): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`encodePng: width and height must be positive integers, got ${width}x${height}`);
  }
  if (!(channels in COLOR_TYPE)) throw new RangeError(`encodePng: channels must be 1, 3 or 4, got ${channels}`);
  const stride = width * channels;
  if (pixels.length !== stride * height) {
    throw new RangeError(`encodePng: expected ${stride * height} bytes for ${width}x${height}x${channels}, got ${pixels.length}`);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = COLOR_TYPE[channels];
  // bytes 10..12: compression 0, filter method 0, no interlace
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
}

/** [-1, 1] -> 0..255, clamped; NaN shows as black rather than poisoning the grid. */
function toByte(v: number): number {
  if (!(v > -1)) return 0;
  if (v >= 1) return 255;
  return Math.round((v + 1) * 127.5);
}

/**
 * Tiles `count` images (each h*w*c, values in [-1, 1]) into a grid `cols` wide with `pad`
 * pixels of mid-grey around every tile. Unused cells of the last row stay grey.
 */
export function imageGrid(
  images: Float32Array,
  count: number,
  h: number,
  w: number,
  c: 1 | 3,
  cols: number,
  pad = 2,
): { width: number; height: number; channels: 1 | 3; pixels: Uint8Array } {
  if (images.length < count * h * w * c) {
    throw new RangeError(`imageGrid: need ${count * h * w * c} values for ${count} images of ${h}x${w}x${c}, got ${images.length}`);
  }
  cols = Math.max(1, cols);
  const rows = Math.max(1, Math.ceil(count / cols));
  const width = cols * w + (cols + 1) * pad;
  const height = rows * h + (rows + 1) * pad;
  const pixels = new Uint8Array(width * height * c).fill(128);
  const per = h * w * c;
  for (let i = 0; i < count; i++) {
    const x0 = pad + (i % cols) * (w + pad);
    const y0 = pad + Math.floor(i / cols) * (h + pad);
    for (let y = 0; y < h; y++) {
      const src = i * per + y * w * c;
      const dst = ((y0 + y) * width + x0) * c;
      for (let k = 0; k < w * c; k++) pixels[dst + k] = toByte(images[src + k]);
    }
  }
  return { width, height, channels: c, pixels };
}

const POINT = [0, 0, 139];
const MEAN = [220, 0, 0];
const AXIS = [225, 225, 225];

/**
 * A 2-D scatter of n points (n*2 floats) over the square [-range, range]^2, y up. Points are
 * 2x2 dots so single samples stay visible; means are red crosses drawn on top.
 */
export function scatterPlot(
  points: Float32Array,
  n: number,
  opts: { size?: number; range?: number; means?: Float32Array } = {},
): { width: number; height: number; channels: 3; pixels: Uint8Array } {
  const size = opts.size ?? 256;
  const range = opts.range ?? 5;
  const pixels = new Uint8Array(size * size * 3).fill(255);
  const put = (px: number, py: number, rgb: number[]) => {
    if (px < 0 || py < 0 || px >= size || py >= size) return;
    pixels.set(rgb, (py * size + px) * 3);
  };
  const toPx = (v: number) => Math.round(((v + range) / (2 * range)) * (size - 1));
  const toPy = (v: number) => Math.round(((range - v) / (2 * range)) * (size - 1));

  const ox = toPx(0);
  const oy = toPy(0);
  for (let i = 0; i < size; i++) {
    put(i, oy, AXIS);
    put(ox, i, AXIS);
  }
  for (let i = 0; i < n; i++) {
    const x = points[2 * i];
    const y = points[2 * i + 1];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    const px = toPx(x);
    const py = toPy(y);
    put(px, py, POINT);
    put(px + 1, py, POINT);
    put(px, py + 1, POINT);
    put(px + 1, py + 1, POINT);
  }
  const means = opts.means;
  if (means) {
    for (let i = 0; i + 1 < means.length; i += 2) {
      const px = toPx(means[i]);
      const py = toPy(means[i + 1]);
      for (let d = -3; d <= 3; d++) {
        put(px + d, py, MEAN);
        put(px, py + d, MEAN);
      }
    }
  }
  return { width: size, height: size, channels: 3, pixels };
}

export function writePng(path: string, img: { width: number; height: number; channels: 1 | 3 | 4; pixels: Uint8Array }): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, encodePng(img.width, img.height, img.channels, img.pixels));
}
