import { planWaves, waveSizeFor } from '../workflows/waves';
import { isDuration, parseDuration } from '../playbooks/duration';

const nodes = (count: number) => Array.from({ length: count }, (_, i) => `node-${i + 1}`);

describe('planWaves', () => {
  it('puts the canary first, then waves of wave_size, the last one smaller', () => {
    expect(planWaves(nodes(6), { canary: 1, wave_size: 2 })).toEqual([
      ['node-1'],
      ['node-2', 'node-3'],
      ['node-4', 'node-5'],
      ['node-6'],
    ]);
  });

  it('has no canary wave when canary is 0', () => {
    expect(planWaves(nodes(4), { canary: 0, wave_size: 2 })).toEqual([
      ['node-1', 'node-2'],
      ['node-3', 'node-4'],
    ]);
  });

  it('reads a percentage of all nodes, canary included, rounded up', () => {
    // 25% of 10 nodes = 2.5 → 3 per wave after the 1-node canary.
    expect(planWaves(nodes(10), { canary: 1, wave_size: '25%' }).map((wave) => wave.length)).toEqual([1, 3, 3, 3]);
  });

  it('gives a percentage wave at least one node', () => {
    expect(planWaves(nodes(3), { canary: 0, wave_size: '1%' })).toEqual([['node-1'], ['node-2'], ['node-3']]);
  });

  it('puts every node into the canary when the canary is larger than the fleet', () => {
    expect(planWaves(nodes(2), { canary: 5, wave_size: 1 })).toEqual([['node-1', 'node-2']]);
  });

  it('plans nothing for no nodes', () => {
    expect(planWaves([], { canary: 1, wave_size: '50%' })).toEqual([]);
  });

  it('keeps the given order and is deterministic', () => {
    const names = ['zeta', 'alpha', 'mid'];
    expect(planWaves(names, { canary: 1, wave_size: 1 })).toEqual([['zeta'], ['alpha'], ['mid']]);
    expect(planWaves(names, { canary: 1, wave_size: 1 })).toEqual(planWaves(names, { canary: 1, wave_size: 1 }));
  });

  it('covers every node exactly once for many sizes', () => {
    for (let total = 0; total <= 40; total++) {
      for (const sizing of [{ canary: 0, wave_size: 1 }, { canary: 3, wave_size: 7 }, { canary: 1, wave_size: '33%' }, { canary: 2, wave_size: '100%' }]) {
        expect(planWaves(nodes(total), sizing).flat()).toEqual(nodes(total));
      }
    }
  });

  it('refuses a node named twice', () => {
    expect(() => planWaves(['a', 'b', 'a'], { canary: 1, wave_size: 1 })).toThrow('node "a" is listed twice');
  });

  it('refuses bad sizes with the reason', () => {
    expect(() => planWaves(nodes(3), { canary: -1, wave_size: 1 })).toThrow('canary -1 must be a whole number of nodes, 0 or more');
    expect(() => planWaves(nodes(3), { canary: 1, wave_size: 0 })).toThrow('wave_size 0 must be a positive whole number');
    expect(() => planWaves(nodes(3), { canary: 1, wave_size: '0%' })).toThrow('wave_size "0%" must be a positive whole number or a percentage from "1%" to "100%"');
    expect(() => planWaves(nodes(3), { canary: 1, wave_size: '150%' })).toThrow('"150%"');
    expect(() => planWaves(nodes(3), { canary: 1, wave_size: 'half' })).toThrow('"half"');
  });
});

describe('waveSizeFor', () => {
  it('turns a percentage into a node count', () => {
    expect(waveSizeFor('10%', 95)).toBe(10);
    expect(waveSizeFor('100%', 7)).toBe(7);
    expect(waveSizeFor(4, 100)).toBe(4);
  });
});

describe('parseDuration', () => {
  it('reads milliseconds, seconds, minutes, hours and sums of them', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('0s')).toBe(0);
  });

  it('refuses anything else with the expected form', () => {
    for (const text of ['', '5', '5 m', '-5s', '1.5m', '5d', 's']) {
      expect(isDuration(text)).toBe(false);
      expect(() => parseDuration(text)).toThrow(`${JSON.stringify(text)} is not a duration such as "500ms", "30s", "5m", "1h" or "1m30s"`);
    }
  });
});
