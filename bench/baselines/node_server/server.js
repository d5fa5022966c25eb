// Baseline: the Open Inference Protocol REST endpoint a Node.js user would
// write with onnxruntime-node: one InferenceSession, JSON.parse the body,
// session.run, JSON.stringify the answer. Nothing tuned.
//
//   node server.js --model FILE [--name NAME] [--host 127.0.0.1] [--port 0]
//                  [--threads N]
//
// --threads sets intraOpNumThreads (default: onnxruntime-node's own default).
// Prints "listening on PORT" once the model is loaded and the port bound.
'use strict';

const http = require('http');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 0, name: 'model' };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    args[key] = argv[i + 1];
  }
  if (!args.model) {
    console.error('usage: node server.js --model FILE [--name NAME] [--port P] [--threads N]');
    process.exit(2);
  }
  return args;
}

const TYPED_ARRAYS = {
  FP32: ['float32', Float32Array],
  FP64: ['float64', Float64Array],
  INT32: ['int32', Int32Array],
  INT64: ['int64', BigInt64Array],
  UINT8: ['uint8', Uint8Array],
  INT8: ['int8', Int8Array],
};
const OIP_TYPES = {
  float32: 'FP32', float64: 'FP64', int32: 'INT32', int64: 'INT64', uint8: 'UINT8', int8: 'INT8',
};

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

async function main() {
  const args = parseArgs(process.argv);
  const options = {};
  if (args.threads) {
    options.intraOpNumThreads = Number(args.threads);
  }
  const session = await ort.InferenceSession.create(args.model, options);
  const inferPath = new RegExp(`^/v2/models/${args.name}(/versions/[0-9]+)?/infer$`);

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/v2/health/ready') {
      res.writeHead(200);
      res.end();
      return;
    }
    if (req.method !== 'POST' || !inferPath.test(req.url)) {
      sendJson(res, 404, { error: `no such endpoint: ${req.method} ${req.url}` });
      return;
    }
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', async () => {
      try {
        const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        const feeds = {};
        for (const input of request.inputs) {
          const [type, ArrayType] = TYPED_ARRAYS[input.datatype] || [];
          if (!type) {
            throw new Error(`datatype ${input.datatype} is not served`);
          }
          const flat = input.data.flat(Infinity);
          const data = type === 'int64' ? ArrayType.from(flat, BigInt) : ArrayType.from(flat);
          feeds[input.name] = new ort.Tensor(type, data, input.shape);
        }
        const results = await session.run(feeds);
        const outputs = Object.entries(results).map(([name, tensor]) => ({
          name,
          datatype: OIP_TYPES[tensor.type],
          shape: tensor.dims,
          data: tensor.type === 'int64' ? Array.from(tensor.data, Number) : Array.from(tensor.data),
        }));
        sendJson(res, 200, { model_name: args.name, model_version: '1', outputs });
      } catch (error) {
        sendJson(res, 400, { error: String(error.message || error) });
      }
    });
  });
  server.listen(Number(args.port), args.host, () => {
    console.log(`listening on ${server.address().port}`);
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
