import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { crc32, encodePng, imageGrid, scatterPlot, writePng } from '../trainer/png.ts';

/** Bit-by-bit CRC-32, deliberately not sharing the table code under test. */
function slowCrc(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A minimal PNG decoder for 8-bit, filter-0, non-interlaced images: enough to check ours. */
function decodePng(png: Buffer): { width: number; height: number; colorType: number; pixels: Uint8Array; chunks: string[] } {
  expect(Array.from(png.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunks: string[] = [];
  const idat: Buffer[] = [];
  let ihdr: Buffer | null = null;
  let off = 8;
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString('ascii', off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    expect(png.readUInt32BE(off + 8 + len), `CRC of ${type}`).toBe(slowCrc(png.subarray(off + 4, off + 8 + len)));
    chunks.push(type);
    if (type === 'IHDR') ihdr = data;
    if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  expect(off).toBe(png.length);
  if (!ihdr) throw new Error('no IHDR');
  const width = ihdr.readUInt32BE(0);
  const height = ihdr.readUInt32BE(4);
  expect(ihdr[8]).toBe(8);
  expect(Array.from(ihdr.subarray(10, 13))).toEqual([0, 0, 0]);
  const colorType = ihdr[9];
  const channels = ({ 0: 1, 2: 3, 6: 4 } as Record<number, number>)[colorType];
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  expect(raw.length).toBe((stride + 1) * height);
  const pixels = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    expect(raw[y * (stride + 1)]).toBe(0);
    pixels.set(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)), y * stride);
  }
  return { width, height, colorType, pixels, chunks };
}

const root = mkdtempSync(join(tmpdir(), 'gan-png-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('crc32', () => {
  it('matches the standard check value', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31 + 7) & 0xff);
    expect(crc32(bytes)).toBe(slowCrc(bytes));
  });
});

describe('encodePng', () => {
  for (const [channels, colorType] of [[1, 0], [3, 2], [4, 6]] as const) {
    it(`writes a decodable ${channels}-channel PNG with the exact pixels`, () => {
      const width = 5;
      const height = 3;
      const pixels = Uint8Array.from({ length: width * height * channels }, (_, i) => (i * 37 + 11) & 0xff);
      const d = decodePng(encodePng(width, height, channels, pixels));
      expect(d.chunks).toEqual(['IHDR', 'IDAT', 'IEND']);
      expect([d.width, d.height, d.colorType]).toEqual([width, height, colorType]);
      expect(Array.from(d.pixels)).toEqual(Array.from(pixels));
    });
  }

  it('rejects a pixel buffer of the wrong size', () => {
    expect(() => encodePng(4, 4, 3, new Uint8Array(47))).toThrow(/expected 48 bytes/);
  });
});

describe('imageGrid', () => {
  it('sizes the grid from cols, rows and padding, with grey borders and empty cells', () => {
    const h = 4;
    const w = 3;
    const count = 5;
    const images = new Float32Array(count * h * w).fill(1); // all white
    const g = imageGrid(images, count, h, w, 1, 3, 2);
    expect([g.width, g.height, g.channels]).toEqual([3 * 3 + 4 * 2, 2 * 4 + 3 * 2, 1]);
    expect(g.pixels.length).toBe(g.width * g.height);
    const at = (x: number, y: number) => g.pixels[y * g.width + x];
    expect(at(0, 0)).toBe(128); // border
    expect(at(2, 2)).toBe(255); // first pixel of image 0
    expect(at(2 + 3, 2)).toBe(128); // gap between columns
    expect(at(2 + 5, 2)).toBe(255); // image 1
    expect(at(2 + 5, 2 + 4 + 2)).toBe(255); // image 4, row 1 col 1
    expect(at(2 + 10, 2 + 4 + 2)).toBe(128); // the unused sixth cell
  });

  it('maps [-1, 1] to 0..255, clamps out-of-range values and places pixels row-major', () => {
    const vals = [-1, 0, 1, -5, 5, Number.NaN, 0.5, -0.5];
    const g = imageGrid(Float32Array.from(vals), 1, 2, 4, 1, 1, 0);
    expect([g.width, g.height]).toEqual([4, 2]);
    expect(Array.from(g.pixels)).toEqual([0, 128, 255, 0, 255, 0, 191, 64]);
  });

  it('keeps RGB channels interleaved', () => {
    const img = Float32Array.from([1, -1, -1, -1, 1, -1]); // red pixel, green pixel
    const g = imageGrid(img, 1, 1, 2, 3, 1, 1);
    expect([g.width, g.height, g.channels]).toEqual([4, 3, 3]);
    const px = (x: number, y: number) => Array.from(g.pixels.subarray((y * g.width + x) * 3, (y * g.width + x) * 3 + 3));
    expect(px(1, 1)).toEqual([255, 0, 0]);
    expect(px(2, 1)).toEqual([0, 255, 0]);
    expect(px(0, 0)).toEqual([128, 128, 128]);
  });
});

describe('scatterPlot', () => {
  it('draws points in dark blue and means as red crosses on white, y up', () => {
    const size = 64;
    const p = scatterPlot(Float32Array.from([2.5, 2.5, 100, 100]), 2, { size, range: 5, means: Float32Array.from([-2.5, -2.5]) });
    expect([p.width, p.height, p.channels]).toEqual([size, size, 3]);
    const px = (x: number, y: number) => Array.from(p.pixels.subarray((y * size + x) * 3, (y * size + x) * 3 + 3));
    expect(px(0, 0)).toEqual([255, 255, 255]);
    // (2.5, 2.5) -> column 0.75*63 ~ 47, row 0.25*63 ~ 16 (top half: y points up).
    const [r, g, b] = px(47, 16);
    expect(b).toBeGreaterThan(100);
    expect(r + g).toBeLessThan(60);
    // (-2.5, -2.5) -> column 16, row 47; arms of the cross too.
    for (const [x, y] of [[16, 47], [13, 47], [19, 47], [16, 44], [16, 50]]) {
      const [mr, mg, mb] = px(x, y);
      expect(mr).toBeGreaterThan(150);
      expect(mg + mb).toBeLessThan(60);
    }
    // The out-of-range point draws nothing and does not wrap.
    expect(px(size - 1, size - 1)).toEqual([255, 255, 255]);
  });

  it('defaults to 256 px', () => {
    const p = scatterPlot(new Float32Array(0), 0, {});
    expect([p.width, p.height]).toEqual([256, 256]);
  });
});

describe('writePng', () => {
  it('creates missing folders and writes a file that decodes to the image', () => {
    const g = imageGrid(Float32Array.from({ length: 3 * 4 * 4 }, (_, i) => (i % 7) / 3 - 1), 3, 4, 4, 1, 2);
    const path = join(root, 'a', 'b', 'grid.png');
    writePng(path, g);
    const d = decodePng(readFileSync(path));
    expect([d.width, d.height, d.colorType]).toEqual([g.width, g.height, 0]);
    expect(Array.from(d.pixels)).toEqual(Array.from(g.pixels));
  });
});
