#!/usr/bin/env node
// Greedy text generation from a glass-onnx artifact directory with onnxruntime-node: the Node.js twin of
// `glass-onnx generate` (runtime/generator.py, decoder.py, text.py, manifest.py). Everything it needs comes from
// DIR/manifest.json (README "Runtime protocol"); it prints the same ids and the same JSON keys.
//
//   node runtime/node/generate.mjs DIR "prompt" [--max-new-tokens N] [--json] [--chat|--no-chat] [--threads N] [--warmup N]
//   node runtime/node/generate.mjs DIR --messages conversation.json [...]

import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { SCHEMA, firstProblem } from "./manifest_schema.mjs";
import { PyFloat, pyJson } from "./py_json.mjs";

const FORMAT = "glass-onnx";
const FORMAT_VERSION = 3; // the manifest format this client reads (runtime/protocol.py FORMAT_VERSION)
const MANIFEST = "manifest.json";

class GlassError extends Error {}

// -- arguments -----------------------------------------------------------------------------------------------
const USAGE =
  'usage: node runtime/node/generate.mjs DIR ["prompt" | --messages FILE] [--max-new-tokens N] [--json] [--chat | --no-chat] [--threads N] [--warmup N]';

function parseArgs(argv) {
  const args = { maxNewTokens: 128, json: false, chat: null, threads: null, warmup: null, messages: null };
  const positional = [];
  const intValue = (flag, value) => {
    if (value === undefined) throw new GlassError(`argument ${flag}: expected one argument`);
    if (!/^[+-]?\d+$/.test(value.trim())) throw new GlassError(`argument ${flag}: invalid int value: '${value}'`);
    return parseInt(value, 10);
  };
  let chatFlag = null;
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let inline;
    if (arg.startsWith("--") && arg.includes("=")) [arg, inline] = [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)];
    const next = () => (inline !== undefined ? inline : argv[++i]);
    if (arg === "-h" || arg === "--help") {
      console.log(USAGE);
      process.exit(0);
    } else if (arg === "--max-new-tokens") {
      args.maxNewTokens = intValue(arg, next());
    } else if (arg === "--messages") {
      args.messages = next();
      if (args.messages === undefined) throw new GlassError(`argument ${arg}: expected one argument`);
    } else if (arg === "--warmup") {
      args.warmup = intValue(arg, next());
      if (args.warmup < 0) throw new GlassError(`--warmup must be 0 or more generated tokens (got ${args.warmup})`);
    } else if (arg === "--threads") {
      args.threads = intValue(arg, next());
      if (args.threads < 1) throw new GlassError("argument --threads: --threads must be at least 1");
    } else if (arg === "--json" || arg === "--chat" || arg === "--no-chat") {
      if (inline !== undefined) throw new GlassError(`argument ${arg}: ignored explicit argument '${inline}'`);
      if (arg === "--json") args.json = true;
      else {
        if (chatFlag && chatFlag !== arg) throw new GlassError(`argument ${arg}: not allowed with argument ${chatFlag}`);
        chatFlag = arg;
        args.chat = arg === "--chat";
      }
    } else if (arg.startsWith("-") && arg.length > 1 && !/^-\d/.test(arg)) {
      throw new GlassError(`unrecognized arguments: ${arg}`);
    } else {
      positional.push(argv[i]);
    }
  }
  if (positional.length < 1) throw new GlassError("the following arguments are required: DIR");
  if (positional.length > 2) throw new GlassError(`unrecognized arguments: ${positional.slice(2).join(" ")}`);
  [args.directory, args.prompt = null] = positional;
  if ((args.prompt === null) === (args.messages === null))
    throw new GlassError("give either a PROMPT or --messages FILE (a conversation), not both or neither");
  return args;
}

// -- manifest (runtime/manifest.py, runtime/manifest.schema.json) ---------------------------------------------
function layerNames(template, numLayers) {
  return Array.from({ length: numLayers }, (_, i) => template.replaceAll("{layer}", String(i)));
}

function loadManifest(directory) {
  const file = path.join(directory, MANIFEST);
  if (!fs.existsSync(directory) || !fs.statSync(directory).isDirectory())
    throw new GlassError(`'${directory}' is not a directory; pass the output of 'glass-onnx export' or 'compile'`);
  if (!fs.existsSync(file))
    throw new GlassError(`'${directory}' has no ${MANIFEST}; it is not a glass-onnx artifact (export or compile it again)`);
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new GlassError(`'${file}' is corrupted (${e.message}); export or compile again`);
  }
  if (manifest === null || typeof manifest !== "object" || manifest.format !== FORMAT)
    throw new GlassError(`'${file}' is not a glass-onnx manifest; export or compile the model again`);
  if (manifest.format_version !== FORMAT_VERSION)
    throw new GlassError(
      `'${directory}' has artifact format ${JSON.stringify(manifest.format_version ?? null)}, this client reads format ` +
        `${FORMAT_VERSION}; recompile it with a matching glass-onnx (or use the client that matches it)`,
    );
  const problem = firstProblem(manifest, SCHEMA);
  if (problem) throw new GlassError(`'${file}' is not a complete glass-onnx manifest: ${problem}; export or compile again`);
  for (const [name, info] of Object.entries(manifest.files)) {
    const p = path.join(directory, name);
    if (!fs.existsSync(p)) throw new GlassError(`'${p}' is missing; the artifact is incomplete, export or compile it again`);
    const size = fs.statSync(p).size;
    if (size !== info.bytes)
      throw new GlassError(
        `'${p}' is ${size} bytes, the manifest says ${info.bytes}: the artifact is truncated or corrupted, export or compile it again`,
      );
    if ("sha256" in info && createHash("sha256").update(fs.readFileSync(p)).digest("hex") !== info.sha256)
      throw new GlassError(
        `'${p}' is not the file this manifest was written with (changed or copied from another artifact, so the ` +
          "sessions may not fit together); export or compile it again",
      );
  }
  return manifest;
}

// -- sessions and state (runtime/decoder.py) ---------------------------------------------------------------
async function createSession(ort, file, threads) {
  try {
    return await ort.InferenceSession.create(file, {
      executionProviders: ["cpu"],
      intraOpNumThreads: threads || os.cpus().length || 1,
      interOpNumThreads: 1,
      logSeverityLevel: 3,
    });
  } catch (e) {
    const first = String(e?.message ?? e).trim().split("\n")[0] || e?.name || "error";
    throw new GlassError(`could not load '${file}' (${first.slice(0, 300)}); the artifact is corrupted, export or compile it again`);
  }
}

const interleave = (a, b) => a.flatMap((x, i) => [x, b[i]]);

class Decoder {
  static async open(directory, threads) {
    const d = new Decoder();
    d.directory = directory;
    d.manifest = loadManifest(directory);
    const m = d.manifest;
    d.model = m.model;
    d.io = m.io;
    d.glass = m.glass ?? null;
    const n = d.model.num_layers;
    d.pastNames = interleave(layerNames(d.io.past_key, n), layerNames(d.io.past_value, n));
    d.presentNames = interleave(layerNames(d.io.present_key, n), layerNames(d.io.present_value, n));
    d.stateIn = d.glass ? layerNames(d.glass.state.input, n) : [];
    d.stateOut = d.glass ? layerNames(d.glass.state.output, n) : [];
    d.handoffOut = d.glass ? layerNames(d.glass.handoff.output, n) : [];
    d.handoffIn = d.glass ? layerNames(d.glass.handoff.input, n) : [];

    const ort = (await import("onnxruntime-node")).default;
    d.ort = ort;
    const sessions = m.sessions;
    d.prefillSession = await createSession(ort, path.join(directory, sessions.prefill), threads);
    // a dense artifact names one file for both: one session, one copy of the weights
    d.decodeSession =
      sessions.decode === sessions.prefill
        ? d.prefillSession
        : await createSession(ort, path.join(directory, sessions.decode), threads);
    d.checkSessions();
    return d;
  }

  checkSessions() {
    const prefillOut = new Set(this.prefillSession.outputNames);
    const decodeIn = new Set(this.decodeSession.inputNames);
    const neededOut = [...this.presentNames, ...this.stateOut, ...this.handoffOut, this.io.logits];
    const neededIn = [...this.pastNames, ...this.handoffIn, this.io.input_ids];
    const missingOut = [...new Set(neededOut.filter((x) => !prefillOut.has(x)))].sort().slice(0, 3);
    const missingIn = [...new Set(neededIn.filter((x) => !decodeIn.has(x)))].sort().slice(0, 3);
    if (missingOut.length)
      throw new GlassError(`the prefill graph lacks outputs ${JSON.stringify(missingOut)} that the manifest names; the artifact's sessions are mismatched, compile again`);
    if (missingIn.length)
      throw new GlassError(`the decode graph lacks inputs ${JSON.stringify(missingIn)} that the manifest names; the artifact's sessions are mismatched, compile again`);
  }

  newState() {
    const { num_kv_heads: kvHeads, head_dim: headDim, intermediate_size: inter } = this.model;
    const T = this.ort.Tensor;
    return {
      mask: [], // 1 per token so far (batch 1)
      past: this.pastNames.map(() => new T("float32", new Float32Array(0), [1, kvHeads, 0, headDim])),
      stats: this.stateIn.map(() => new T("float32", new Float32Array(inter), [1, inter])),
      kept: [],
    };
  }

  async run(session, state, inputIds, prefill) {
    const T = this.ort.Tensor;
    const mask = [...state.mask, ...inputIds.map(() => 1)];
    // positions count only real tokens: cumulative sum of the mask minus 1, clipped at 0, the last n columns
    let sum = 0;
    const positions = mask.map((v) => Math.max((sum += v) - 1, 0)).slice(mask.length - inputIds.length);
    const int64 = (values) => new T("int64", BigInt64Array.from(values, (v) => BigInt(v)), [1, values.length]);
    const feeds = {
      [this.io.input_ids]: int64(inputIds),
      [this.io.attention_mask]: int64(mask),
    };
    if (this.io.position_ids) feeds[this.io.position_ids] = int64(positions);
    this.pastNames.forEach((name, i) => (feeds[name] = state.past[i]));
    const outputs = [this.io.logits, ...this.presentNames];
    if (prefill) {
      // stats that the graph declares as initializer-backed inputs (a default of zeros, batch 1) are not listed in
      // inputNames, and onnxruntime-node drops feeds it does not list: those start from that default, the zeros the
      // protocol starts from (this client's prompt calls that count start from zeros, batch 1: the whole prompt,
      // or after the chat template's opening; warm-up tokens then carry the state on, in graphs that list it)
      const listed = new Set(session.inputNames);
      this.stateIn.forEach((name, i) => listed.has(name) && (feeds[name] = state.stats[i]));
      outputs.push(...this.stateOut, ...this.handoffOut);
    } else {
      this.handoffIn.forEach((name, i) => (feeds[name] = state.kept[i]));
    }
    const result = await session.run(feeds, outputs);
    state.mask = mask;
    state.past = this.presentNames.map((name) => result[name]);
    if (prefill && this.glass) {
      state.stats = this.stateOut.map((name) => result[name]);
      state.kept = this.handoffOut.map((name) => result[name]);
    }
    return result[this.io.logits]; // [1, n, vocab]
  }

  prefill(state, inputIds) {
    return this.run(this.prefillSession, state, inputIds, true);
  }

  decode(state, inputIds) {
    if (this.glass && !state.kept.length) throw new GlassError("decode before prefill: run the prompt through prefill first");
    return this.run(this.decodeSession, state, inputIds, false);
  }
}

// greedy choice on the last row of logits [1, n, vocab]: the first index of the maximum, like np.argmax
function argmaxLast(logits) {
  const vocab = logits.dims[logits.dims.length - 1];
  const data = logits.data;
  const start = data.length - vocab;
  let best = 0;
  let bestValue = data[start];
  if (Number.isNaN(bestValue)) return 0;
  for (let i = 1; i < vocab; i++) {
    const v = data[start + i];
    if (Number.isNaN(v)) return i;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

// -- text (runtime/text.py) ----------------------------------------------------------------------------------
class TextCodec {
  static async open(directory, info) {
    const { Tokenizer } = await import("@huggingface/tokenizers");
    const c = new TextCodec();
    c.info = info;
    const file = path.join(directory, info.file);
    let json;
    try {
      json = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
      throw new GlassError(`could not read the tokenizer '${file}' (${e.message.split("\n")[0]}); export or compile again`);
    }
    // tokenizer.json alone, as the Python `tokenizers` package reads it: no transformers-side decode clean-up
    c.tokenizer = new Tokenizer(json, { eos_token: info.eos_token ?? undefined, clean_up_tokenization_spaces: false });
    c.chatTemplate = info.chat_template ? fs.readFileSync(path.join(directory, info.chat_template), "utf8") : null;
    c.systemOpenings = new Map(); // the openings of conversations encoded with a system turn of their own, by ids
    return c;
  }

  get eosTokenIds() {
    return [...(this.info.eos_token_ids ?? [])];
  }

  async encode(text, chat) {
    if (chat) return this.encodeMessages([{ role: "user", content: text }]);
    return this.tokenizer.encode(text, { add_special_tokens: true }).ids;
  }

  // as runtime/text.py encode_messages and check_conversation: a conversation, opened for the assistant's turn
  async encodeMessages(messages) {
    if (this.chatTemplate === null) throw new GlassError("this model has no chat template; give it plain text, without --chat or a conversation");
    if (!Array.isArray(messages) || !messages.length)
      throw new GlassError('a conversation is a non-empty list of messages; pass [{"role": "user", "content": "..."}]');
    messages.forEach((m, i) => {
      if (!(m && typeof m === "object" && typeof m.role === "string" && typeof m.content === "string"))
        throw new GlassError(`message ${i + 1} of the conversation is not {"role": str, "content": str}; give each turn a role and a text content`);
    });
    if (messages[messages.length - 1].role === "assistant")
      throw new GlassError("the conversation ends with the assistant's turn; end it with the user's turn, which the model then answers");
    const rendered = await this.renderChat(messages);
    // the template already wrote the special tokens the model expects
    const ids = this.tokenizer.encode(rendered, { add_special_tokens: false }).ids;
    const firstOther = messages.findIndex((m) => m.role !== "system");
    const system = messages.slice(0, firstOther < 0 ? messages.length : firstOther);
    if (system.length) {
      const emptyTurn = await this.renderChat([...system, { role: "user", content: "" }]);
      this.systemOpenings.set(ids.join(","), opening(ids, this.tokenizer.encode(emptyTurn, { add_special_tokens: false }).ids));
    }
    return ids;
  }

  // as runtime/text.py template_prefix_length: the chat template's shared opening (system block, user header)
  async templatePrefixLength(ids) {
    if (this.chatTemplate === null) return 0;
    if (this.systemOpenings.has(ids.join(","))) return this.systemOpenings.get(ids.join(","));
    if (this.emptyTurn === undefined) this.emptyTurn = await this.encode("", true);
    return opening(ids, this.emptyTurn);
  }

  decode(ids) {
    if (!ids.length) return "";
    return this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  async renderChat(messages, addGenerationPrompt = true) {
    const { Template } = await import("@huggingface/jinja");
    try {
      // @huggingface/jinja trims and lstrips blocks (like the Python runtime's jinja2 environment) and brings its
      // own raise_exception and strftime_now globals; a raised message surfaces in the error below
      return new Template(this.chatTemplate).render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.info.bos_token || "",
        eos_token: this.info.eos_token || "",
      });
    } catch (e) {
      throw new GlassError(`the saved chat template failed to render (${String(e?.message ?? e).split("\n")[0]}); run without --chat`);
    }
  }
}

// as runtime/text.py TextCodec._opening: the common prefix of a prompt with an empty user turn's rendering
function opening(ids, emptyTurn) {
  let n = 0;
  while (n < ids.length && n < emptyTurn.length && ids[n] === emptyTurn[n]) n++;
  // a whole empty turn is no prefix of a prompt, and an opening needs a rest to count
  return n < emptyTurn.length && n < ids.length ? n : 0;
}

// -- generation (runtime/generator.py, greedy path) ----------------------------------------------------------
const PY_WHITESPACE = /^[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

async function generate(decoder, codec, promptIds, maxNewTokens, onText, warmup = 0) {
  const maxContext = Number(decoder.model.max_context);
  if (!promptIds.length) throw new GlassError("the prompt is empty; pass some text to continue");
  if (maxNewTokens < 1) throw new GlassError(`--max-new-tokens must be at least 1 (got ${maxNewTokens})`);
  if (promptIds.length + maxNewTokens > maxContext)
    throw new GlassError(
      `prompt (${promptIds.length} tokens) + max-new-tokens (${maxNewTokens}) exceeds the model's context ` +
        `of ${maxContext}; shorten the prompt or lower --max-new-tokens`,
    );
  const eos = new Set(codec.eosTokenIds);
  const state = decoder.newState();

  // GLASS's statistic leaves out the chat template's shared opening: prefill it, restart the statistic, prefill the rest
  const opening = decoder.glass ? await codec.templatePrefixLength(promptIds) : 0;
  const t0 = performance.now();
  if (opening) {
    await decoder.prefill(state, promptIds.slice(0, opening));
    state.stats = decoder.newState().stats;
  }
  let token = argmaxLast(await decoder.prefill(state, promptIds.slice(opening)));
  const tFirst = performance.now();

  const tokens = [token];
  let emitted = "";
  let stopReason = "length";
  for (;;) {
    if (eos.has(token)) {
      tokens.pop(); // the EOS id is a stop marker, not text
      stopReason = "eos";
      break;
    }
    if (onText) {
      // hold back an incomplete UTF-8 sequence
      const safe = codec.decode(tokens).replace(/\ufffd+$/, "");
      if (safe.length > emitted.length) {
        onText(safe.slice(emitted.length));
        emitted = safe;
      }
    }
    if (tokens.length >= maxNewTokens) break;
    // the first `warmup` generated tokens run densely and join the statistic (Decoder.prefill_prompt's warmup)
    const dense = decoder.glass && tokens.length <= warmup;
    token = argmaxLast(await (dense ? decoder.prefill(state, [token]) : decoder.decode(state, [token])));
    tokens.push(token);
  }
  const tLast = performance.now();

  const text = codec.decode(tokens);
  if (onText && text.length > emitted.length) onText(text.slice(emitted.length));
  const decodeS = (tLast - tFirst) / 1e3;
  return {
    promptIds: [...promptIds],
    tokens,
    text,
    prefillMs: tFirst - t0,
    decodeTokensPerS: tokens.length > 1 && decodeS > 0 ? (tokens.length - 1) / decodeS : 0,
    stopReason,
  };
}

const round3 = (x) => Math.round(x * 1e3) / 1e3;

async function main(argv) {
  const args = parseArgs(argv);
  const decoder = await Decoder.open(args.directory, args.threads);
  const codec = await TextCodec.open(decoder.directory, decoder.manifest.tokenizer);
  const promptIds = args.messages === null ? await promptText(args, decoder, codec) : await conversation(args, codec);
  const onText = args.json ? null : (s) => process.stdout.write(s);
  const warmup = args.warmup ?? Number(decoder.glass?.warmup_tokens ?? 0);
  const result = await generate(decoder, codec, promptIds, args.maxNewTokens, onText, warmup);
  const glass = decoder.glass;
  if (args.json) {
    const data = {
      prompt_ids: result.promptIds,
      tokens: result.tokens,
      text: result.text,
      prompt_tokens: result.promptIds.length,
      prefill_ms: new PyFloat(round3(result.prefillMs)),
      decode_tokens_per_s: new PyFloat(round3(result.decodeTokensPerS)),
      stop_reason: result.stopReason,
      method: glass ? glass.method : "dense",
    };
    if (glass) {
      data.kept_neurons = glass.k;
      data.intermediate_size = glass.intermediate_size;
    }
    process.stdout.write(pyJson(data) + "\n");
    return;
  }
  let figures =
    `[${result.promptIds.length} prompt tokens, prefill ${result.prefillMs.toFixed(0)} ms, ` +
    `${result.tokens.length} new tokens at ${result.decodeTokensPerS.toFixed(1)} tok/s`;
  if (glass) figures += `, ${glass.method} keeps ${keepSummary(glass)}`;
  process.stdout.write(`\n${figures}]\n`);
}

async function promptText(args, decoder, codec) {
  if (PY_WHITESPACE.test(args.prompt)) throw new GlassError("the prompt is empty; pass some text to continue");
  const chat = args.chat ?? (Boolean(decoder.manifest.tokenizer.instruct) && codec.chatTemplate !== null);
  return codec.encode(args.prompt, chat);
}

// as glass_onnx/cli.py _prompt_or_conversation
async function conversation(args, codec) {
  if (args.chat === false) throw new GlassError("a conversation goes through the chat template; drop --no-chat");
  let data;
  try {
    data = JSON.parse(fs.readFileSync(args.messages, "utf8"));
  } catch (e) {
    throw new GlassError(`could not read the conversation in '${args.messages}' (${e.message.split("\n")[0]}); pass a JSON file`);
  }
  return codec.encodeMessages(data && !Array.isArray(data) && typeof data === "object" ? data.messages : data);
}

// as runtime/manifest.py keep_summary
function keepSummary(glass) {
  const budgets = glass.k_per_layer;
  const spread = new Set(budgets).size === 1 ? "" : ` on average (${Math.min(...budgets)}-${Math.max(...budgets)})`;
  return `${glass.k}/${glass.intermediate_size} FFN neurons per layer${spread}`;
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (e) => {
    if (e instanceof GlassError) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exit(2);
    }
    const first = String(e?.message ?? e).trim().split("\n")[0];
    process.stderr.write(`error: ${first}\n`);
    process.exit(1);
  },
);
