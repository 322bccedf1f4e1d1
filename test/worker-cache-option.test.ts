// KATAFLEET_MAX_CACHED_WORKFLOWS, an input surface of the worker (README "Fleet size": the worker's memory): a
// whole number or nothing; anything else is refused with the variable's name and the fix, before a worker starts.
import { cacheOption } from '../worker/worker';

describe('KATAFLEET_MAX_CACHED_WORKFLOWS', () => {
  it('takes a whole number, and leaves the SDK default when unset or empty', () => {
    expect(cacheOption('100')).toEqual({ maxCachedWorkflows: 100 });
    expect(cacheOption(' 40 ')).toEqual({ maxCachedWorkflows: 40 });
    expect(cacheOption(0)).toEqual({ maxCachedWorkflows: 0 });
    expect(cacheOption(undefined)).toEqual({});
    expect(cacheOption('')).toEqual({});
  });

  it.each(['12;rm -rf /', '$(id)', '-1', '100001', '0x10', '1e3', '12.0', 'NaN', 'Infinity', '１２', '9'.repeat(400), '40\n41'])('refuses %j naming the variable and the fix', (value) => {
    expect(() => cacheOption(value)).toThrow(/^KATAFLEET_MAX_CACHED_WORKFLOWS=".*": use a whole number of workflows from 0 to 100000/s);
  });
});
