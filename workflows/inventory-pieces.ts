// The inventory in bounded pieces (issue 13): a rollout's start input names how many nodes and pieces it will
// receive and their digest; the nodes themselves arrive as signals of at most `inventoryPieceNodes` nodes each, so
// no payload grows with the fleet (docs/scale.md, "The inventory in pieces"). Deterministic: the API splits and
// digests with these pure functions, the workflows check with the same ones (and receive and gather the pieces with
// receiveInventoryPieces and gatherInventory, workflow code).
import type { Duration } from '@temporalio/common';
import { condition, defineSignal, setHandler } from '@temporalio/workflow';
import type { NodeTarget } from '../activities/node-types';

/** Nodes per piece at most: ≈ 260 B a node, so a piece stays near 130 KB, half of the 256 KiB every payload stays under. */
export const inventoryPieceNodes = 500;

/** What a rollout's start input says of an inventory that arrives in pieces. */
export interface InventoryManifest {
  /** Nodes in all pieces together. */
  nodes: number;
  /** Pieces to wait for, indexed 0 … pieces-1. */
  pieces: number;
  /** sha256 (hex) of the nodes' JSON in plan order ({@link inventoryDigest}). */
  sha256: string;
}

/** One piece of the inventory, as signalled to the rollout (and read back by later runs). */
export interface InventoryPiece {
  index: number;
  nodes: NodeTarget[];
}

/** The signal that delivers a piece; pieces after the inventory is complete are ignored. */
export const inventoryPieceSignal = defineSignal<[InventoryPiece]>('inventoryPiece');

/** The name of {@link inventoryPieceSignal}, for readers of a history. */
export const inventoryPieceSignalName = 'inventoryPiece';

/**
 * Takes the pieces signalled to this workflow (the first ones arrive with signalWithStart, so call it before the
 * workflow's first await); a piece already there is not replaced. Returns where they are kept. Workflow code.
 */
export function receiveInventoryPieces(): Map<number, NodeTarget[]> {
  const received = new Map<number, NodeTarget[]>();
  setHandler(inventoryPieceSignal, (piece) => {
    if (piece && Number.isInteger(piece.index) && Array.isArray(piece.nodes) && !received.has(piece.index)) received.set(piece.index, piece.nodes);
  });
  return received;
}

/** A run whose history holds the pieces (activities/inventory-history's RunRef, spelled out: no import circle). */
type PiecesRun = { workflowId: string; runId: string };

/**
 * The inventory of `manifest`: read back from the run `from` names (`read`: the readInventoryPiece activity, one
 * call a piece, all at once), or else waited for as signals into `received` for at most `wait`; then checked by
 * {@link assembleInventory}. Workflow code (rollouts and drift runs alike).
 */
export async function gatherInventory(manifest: InventoryManifest, received: Map<number, NodeTarget[]>, from: PiecesRun | undefined,
  read: (request: { from: PiecesRun; index: number }) => Promise<InventoryPiece>, wait: Duration): Promise<{ nodes: NodeTarget[] } | { problem: string }> {
  if (from) {
    const pieces = await Promise.all(Array.from({ length: manifest.pieces }, (_, index) => read({ from, index })));
    for (const piece of pieces) received.set(piece.index, piece.nodes);
  } else {
    await condition(() => received.size >= manifest.pieces, wait);
  }
  return assembleInventory(manifest, received);
}

/** `nodes` cut into pieces of at most {@link inventoryPieceNodes}, and their manifest. Pure. */
export function splitInventory(nodes: readonly NodeTarget[], pieceNodes = inventoryPieceNodes): { manifest: InventoryManifest; pieces: InventoryPiece[] } {
  const pieces: InventoryPiece[] = [];
  for (let start = 0; start < nodes.length; start += pieceNodes) pieces.push({ index: pieces.length, nodes: nodes.slice(start, start + pieceNodes) });
  return { manifest: { nodes: nodes.length, pieces: pieces.length, sha256: inventoryDigest(nodes) }, pieces };
}

/**
 * The nodes of `pieces` in order, once every piece of `manifest` is there and they match its count and digest;
 * otherwise why not (a clear sentence). Pure.
 */
export function assembleInventory(manifest: InventoryManifest, pieces: ReadonlyMap<number, NodeTarget[]>): { nodes: NodeTarget[] } | { problem: string } {
  const missing: number[] = [];
  for (let index = 0; index < manifest.pieces; index++) if (!pieces.has(index)) missing.push(index);
  if (missing.length > 0) return { problem: `${missing.length} of ${manifest.pieces} inventory pieces did not arrive (first missing: piece ${missing[0]})` };
  const nodes = Array.from({ length: manifest.pieces }, (_, index) => pieces.get(index)!).flat();
  if (nodes.length !== manifest.nodes) return { problem: `the inventory pieces hold ${nodes.length} nodes, the rollout was started for ${manifest.nodes}` };
  const digest = inventoryDigest(nodes);
  if (digest !== manifest.sha256) return { problem: `the inventory pieces' sha256 is ${digest.slice(0, 12)}…, the rollout was started for ${manifest.sha256.slice(0, 12)}… (a piece was changed or sent twice with other content)` };
  return { nodes };
}

/** sha256 (hex) of the nodes' JSON. Pure (no Node built-ins: workflows call it). */
export function inventoryDigest(nodes: readonly NodeTarget[]): string {
  return sha256Hex(utf8(JSON.stringify(nodes)));
}

function utf8(text: string): Uint8Array {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    let code = text.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        i++;
      }
    }
    if (code < 0x80) bytes.push(code);
    else if (code < 0x800) bytes.push(0xc0 | (code >> 6), 0x80 | (code & 63));
    else if (code < 0x10000) bytes.push(0xe0 | (code >> 12), 0x80 | ((code >> 6) & 63), 0x80 | (code & 63));
    else bytes.push(0xf0 | (code >> 18), 0x80 | ((code >> 12) & 63), 0x80 | ((code >> 6) & 63), 0x80 | (code & 63));
  }
  return Uint8Array.from(bytes);
}

const roundConstants = Uint32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 (FIPS 180-4) of `data`, hex. Pure; test/scale-payloads.test.ts checks it against node:crypto. */
export function sha256Hex(data: Uint8Array): string {
  const length = data.length;
  const padded = new Uint8Array(Math.ceil((length + 9) / 64) * 64);
  padded.set(data);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);
  const hash = Uint32Array.from([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let t = 0; t < 16; t++) w[t] = view.getUint32(offset + t * 4);
    for (let t = 16; t < 64; t++) {
      const s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >>> 3);
      const s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = hash;
    for (let t = 0; t < 64; t++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + roundConstants[t] + w[t]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    hash[0] += a;
    hash[1] += b;
    hash[2] += c;
    hash[3] += d;
    hash[4] += e;
    hash[5] += f;
    hash[6] += g;
    hash[7] += h;
  }
  return Array.from(hash, (word) => word.toString(16).padStart(8, '0')).join('');
}
