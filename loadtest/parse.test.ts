// The parsers against output captured from real runs of Debian's wrk 4.1.0, hey 0.1.4 and
// h2load (nghttp2 1.52.0) on this project's machine: successful runs, runs against a server
// that answers 503s and drops connections, and a run where nothing could connect. No tool
// needs to be installed for this test.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseWrk, parseHey, parseH2load, wrkDurationMs, percentile } from './parse.ts';

const close = (actual: number | null, expected: number) => {
  assert.ok(actual !== null && Math.abs(actual - expected) < 1e-9, `expected ${expected}, got ${actual}`);
};

// wrk -t1 -c50 -d2s --latency, closed loop against the bare upstream.
const WRK_CLOSED = `Running 2s test @ http://127.0.0.1:34861/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.09ms    4.74ms  76.51ms   97.64%
    Req/Sec    32.91k     7.92k   39.09k    80.00%
  Latency Distribution
     50%    1.31ms
     75%    1.55ms
     90%    2.24ms
     99%   20.61ms
  65389 requests in 2.00s, 11.10MB read
Requests/sec:  32646.66
Transfer/sec:      5.54MB
`;

// wrk with the pacing script (fixed rate, 1,000 req/s): sub-millisecond units.
const WRK_PACED = `Running 3s test @ http://127.0.0.1:34861/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   179.85us  266.43us   4.35ms   97.18%
    Req/Sec     1.01k   109.43     1.21k    63.33%
  Latency Distribution
     50%  134.00us
     75%  189.00us
     90%  265.00us
     99%    0.97ms
  3016 requests in 3.00s, 524.27KB read
Requests/sec:   1004.81
Transfer/sec:    174.66KB
`;

// wrk against a server answering every third request 503 and dropping every 50th connection.
const WRK_ERRORS = `Running 1s test @ http://127.0.0.1:18181/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   563.31us    1.00ms  17.44ms   94.61%
    Req/Sec    25.16k     8.52k   33.78k    70.00%
  Latency Distribution
     50%  315.00us
     75%  426.00us
     90%    0.88ms
     99%    5.39ms
  24997 requests in 1.00s, 4.14MB read
  Socket errors: connect 0, read 510, write 0, timeout 0
  Non-2xx or 3xx responses: 8332
Requests/sec:  24985.58
Transfer/sec:      4.14MB
`;

// hey -c 50 -q 20 -z 2s: every request 200.
const HEY_OK = `
Summary:
  Total:	2.0089 secs
  Slowest:	0.0176 secs
  Fastest:	0.0000 secs
  Average:	0.0017 secs
  Requests/sec:	995.5667
  
  Total data:	22000 bytes
  Size/request:	11 bytes

Response time histogram:
  0.000 [1]	|
  0.002 [1454]	|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■
  0.004 [448]	|■■■■■■■■■■■■
  0.005 [47]	|■
  0.007 [0]	|
  0.009 [0]	|
  0.011 [1]	|
  0.012 [0]	|
  0.014 [13]	|
  0.016 [22]	|■
  0.018 [14]	|


Latency distribution:
  10% in 0.0005 secs
  25% in 0.0007 secs
  50% in 0.0011 secs
  75% in 0.0019 secs
  90% in 0.0029 secs
  95% in 0.0035 secs
  99% in 0.0151 secs

Details (average, fastest, slowest):
  DNS+dialup:	0.0000 secs, 0.0000 secs, 0.0176 secs
  DNS-lookup:	0.0000 secs, 0.0000 secs, 0.0000 secs
  req write:	0.0000 secs, 0.0000 secs, 0.0009 secs
  resp wait:	0.0016 secs, 0.0000 secs, 0.0151 secs
  resp read:	0.0000 secs, 0.0000 secs, 0.0037 secs

Status code distribution:
  [200]	2000 responses



`;

// hey -n 100 -c 4 against a server answering every fourth request 404.
const HEY_MIXED = `
Summary:
  Total:	0.0409 secs
  Slowest:	0.0099 secs
  Fastest:	0.0002 secs
  Average:	0.0014 secs
  Requests/sec:	2445.8707
  
  Total data:	500 bytes
  Size/request:	5 bytes

Response time histogram:
  0.000 [1]	|■
  0.001 [71]	|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■
  0.002 [19]	|■■■■■■■■■■■
  0.003 [0]	|
  0.004 [0]	|
  0.005 [0]	|
  0.006 [6]	|■■■
  0.007 [0]	|
  0.008 [1]	|■
  0.009 [1]	|■
  0.010 [1]	|■


Latency distribution:
  10% in 0.0004 secs
  25% in 0.0006 secs
  50% in 0.0008 secs
  75% in 0.0013 secs
  90% in 0.0021 secs
  95% in 0.0058 secs
  99% in 0.0099 secs

Details (average, fastest, slowest):
  DNS+dialup:	0.0000 secs, 0.0002 secs, 0.0099 secs
  DNS-lookup:	0.0000 secs, 0.0000 secs, 0.0000 secs
  req write:	0.0000 secs, 0.0000 secs, 0.0000 secs
  resp wait:	0.0011 secs, 0.0002 secs, 0.0098 secs
  resp read:	0.0003 secs, 0.0000 secs, 0.0052 secs

Status code distribution:
  [200]	80 responses
  [404]	20 responses



`;

// hey against a closed port: no response at all, only errors.
const HEY_REFUSED = `
Summary:
  Total:	0.0009 secs
  Slowest:	0.0000 secs
  Fastest:	0.0000 secs
  Average:	 NaN secs
  Requests/sec:	21579.6055
  

Response time histogram:


Latency distribution:

Details (average, fastest, slowest):
  DNS+dialup:	 NaN secs, 0.0000 secs, 0.0000 secs
  DNS-lookup:	 NaN secs, 0.0000 secs, 0.0000 secs
  req write:	 NaN secs, 0.0000 secs, 0.0000 secs
  resp wait:	 NaN secs, 0.0000 secs, 0.0000 secs
  resp read:	 NaN secs, 0.0000 secs, 0.0000 secs

Status code distribution:

Error distribution:
  [20]	Get "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused

`;

// h2load -t1 -c5 -m10 -D 2 --log-file=…, and the first lines of its log file.
const H2LOAD_OK = `starting benchmark...
spawning thread #0: 5 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
progress: 20% of clients started
progress: 40% of clients started
progress: 60% of clients started
progress: 80% of clients started
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 24270.00 req/s, 1.09MB/s
requests: 48540 total, 48590 started, 48540 done, 48540 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 48570 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.18MB (2283055) total, 427.32KB (437575) headers (space savings 90.31%), 521.75KB (534270) data
                     min         max         mean         sd        +/- sd
time for request:      544us     24.61ms      1.99ms      2.05ms    93.19%
time for connect:     9.85ms     30.62ms     16.81ms      9.07ms    80.00%
time to 1st byte:    16.94ms     37.90ms     24.44ms      8.84ms    80.00%
req/s           :    4839.32     4864.11     4853.35        9.51    60.00%
`;
const H2LOAD_OK_LOG = `1795306541521545	200	15314
1795306541521546	200	15364
1795306541521546	200	15367
1795306541521546	200	15369
1795306541521547	200	15371
1795306541521547	200	15372
1795306541521547	200	15374
1795306541521550	200	15374
1795306541521550	200	15375
1795306541521550	200	15377
1795306541520701	200	16942
1795306541520702	200	16947
`;

// h2load against an h2c server answering every third stream 503 and resetting every 50th
// (it crashed on the reset, hence the errored request), with its whole log file.
const H2LOAD_ERRORS = `starting benchmark...
spawning thread #0: 2 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Warm-up started for thread #0.
progress: 50% of clients started
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 1.00s, 49.00 req/s, 1.11KB/s
requests: 50 total, 60 started, 50 done, 33 succeeded, 17 failed, 1 errored, 0 timeout
status codes: 33 2xx, 0 3xx, 0 4xx, 16 5xx
traffic: 1.11KB (1132) total, 152B (152) headers (space savings 92.79%), 49B (49) data
                     min         max         mean         sd        +/- sd
time for request:      430us      6.47ms      1.86ms      1.86ms    79.59%
time for connect:       52us        78us        65us        17us   100.00%
time to 1st byte:     4.26ms      6.57ms      5.41ms      1.63ms   100.00%
req/s           :    1020.81     1612.99     1316.90      418.73   100.00%
`;
const H2LOAD_ERRORS_LOG = `1795306895949972	200	4136
1795306895949973	200	4162
1795306895949973	503	4164
1795306895949973	200	4166
1795306895949974	200	4167
1795306895954151	503	1469
1795306895954152	200	1471
1795306895954153	200	1473
1795306895954153	503	1474
1795306895954153	200	1475
1795306895949953	200	6462
1795306895949954	503	6467
1795306895949954	200	6469
1795306895949955	200	6470
1795306895949955	503	6471
1795306895955634	200	1037
1795306895955635	200	1042
1795306895955635	503	1044
1795306895955635	200	1046
1795306895955636	200	1047
1795306895956690	503	430
1795306895956691	200	434
1795306895956691	200	435
1795306895956692	503	436
1795306895956692	200	437
1795306895956433	200	1252
1795306895956434	503	1256
1795306895956434	200	1257
1795306895956434	200	1258
1795306895956435	503	1259
1795306895957137	200	987
1795306895957137	200	992
1795306895957138	503	993
1795306895957138	200	994
1795306895957138	200	995
1795306895957701	503	814
1795306895957702	200	818
1795306895957702	200	820
1795306895957703	503	821
1795306895957703	200	822
1795306895958141	200	791
1795306895958142	503	795
1795306895958142	200	796
1795306895958142	200	797
1795306895958143	503	799
1795306895958532	200	953
1795306895958533	200	958
1795306895958533	503	959
1795306895958534	200	960
1795306895958534	-1	1491
`;

describe('wrk', () => {
  test('reads rate, count, duration and the latency percentiles with their units', () => {
    const r = parseWrk(WRK_CLOSED);
    assert.equal(r.requests, 65389);
    assert.equal(r.seconds, 2);
    assert.equal(r.rps, 32646.66);
    close(r.p50, 1.31);
    close(r.p90, 2.24);
    close(r.p99, 20.61);
    assert.equal(r.non2xx, 0);
    assert.equal(r.socketErrors, 0);
  });

  test('microsecond percentiles become fractions of a millisecond', () => {
    const r = parseWrk(WRK_PACED);
    close(r.p50, 0.134);
    close(r.p90, 0.265);
    close(r.p99, 0.97);
    assert.equal(r.requests, 3016);
    assert.equal(r.rps, 1004.81);
  });

  test('counts non-2xx answers and every kind of socket error', () => {
    const r = parseWrk(WRK_ERRORS);
    assert.equal(r.non2xx, 8332);
    assert.equal(r.socketErrors, 510);
    assert.equal(r.requests, 24997);
  });

  test('a run that never started is an error naming the output, not zeros', () => {
    assert.throws(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused\n'), /no summary.*Connection refused/s);
  });

  test('duration units', () => {
    assert.equal(wrkDurationMs('250.00us'), 0.25);
    assert.equal(wrkDurationMs('1.50s'), 1500);
    assert.equal(wrkDurationMs('1.00m'), 60_000);
    assert.throws(() => wrkDurationMs('fast'), /not a wrk duration/);
  });
});

describe('hey', () => {
  test('reads percentiles in seconds as milliseconds and counts responses by status', () => {
    const r = parseHey(HEY_OK);
    close(r.p50, 1.1);
    close(r.p90, 2.9);
    close(r.p99, 15.1);
    assert.equal(r.requests, 2000);
    assert.equal(r.non2xx, 0);
    assert.equal(r.socketErrors, 0);
    assert.equal(r.seconds, 2.0089);
    // Rate from completed responses, as wrk counts it.
    close(r.rps, 2000 / 2.0089);
  });

  test('non-2xx responses are counted apart from the 2xx ones', () => {
    const r = parseHey(HEY_MIXED);
    assert.equal(r.requests, 100);
    assert.equal(r.non2xx, 20);
    assert.equal(r.socketErrors, 0);
  });

  test('a run where nothing connected has errors, no percentiles and no rate', () => {
    const r = parseHey(HEY_REFUSED);
    assert.equal(r.requests, 0);
    assert.equal(r.socketErrors, 20);
    assert.equal(r.p50, null);
    assert.equal(r.p99, null);
    assert.equal(r.rps, 0);
  });
});

describe('h2load', () => {
  test('rate and counts from the summary, percentiles from the log file', () => {
    const r = parseH2load(H2LOAD_OK, H2LOAD_OK_LOG);
    assert.equal(r.rps, 24270);
    assert.equal(r.requests, 48540);
    assert.equal(r.seconds, 2);
    assert.equal(r.non2xx, 0);
    assert.equal(r.socketErrors, 0);
    // 12 logged requests, elapsed µs sorted: 15314 … 15377, 16942, 16947.
    close(r.p50, 15.372);
    close(r.p90, 16.942);
    close(r.p99, 16.947);
  });

  test('5xx answers and reset streams are errors; latency covers only the 2xx answers', () => {
    const r = parseH2load(H2LOAD_ERRORS, H2LOAD_ERRORS_LOG);
    assert.equal(r.non2xx, 16);
    assert.equal(r.socketErrors, 1);
    assert.equal(r.requests, 50);
    // 33 answers of 200 in the log; nearest rank 17, 30 and 33.
    close(r.p50, 1.037);
    close(r.p90, 4.167);
    close(r.p99, 6.47);
  });

  test('without the log file there are counts but no percentiles', () => {
    const r = parseH2load(H2LOAD_OK, '');
    assert.equal(r.requests, 48540);
    assert.equal(r.p99, null);
  });
});

test('nearest-rank percentile', () => {
  const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.equal(percentile(xs, 50), 5);
  assert.equal(percentile(xs, 90), 9);
  assert.equal(percentile(xs, 99), 10);
  assert.equal(percentile(xs, 0), 1);
  assert.equal(percentile([], 50), null);
});
