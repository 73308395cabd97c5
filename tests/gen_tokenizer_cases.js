#!/usr/bin/env node
// Reference encodings for tests/test_tokenizer.c, made by running llama-tokenizer-js itself.
//   node tests/gen_tokenizer_cases.js [OUTDIR] [TEXTFILE...]
// OUTDIR defaults to build/ref; the package is read from data/npm/llama-tokenizer-js (made by
// scripts/fetch_tokenizer.sh; override with LOQT_TOKENIZER_PKG).  Lines of the optional text files
// are sampled into the cases too.  Writes OUTDIR/tokenizer_cases.txt, one case a line:
//   E <bos 0|1> <hex of the UTF-8 text, or - if empty> : <ids>   encode(text, bos) == ids
//   D <hex of the expected text> : <ids>                        decode(ids) == text
// E lines come from (a) the golden cases in the package's own tests (checked against the package
// before they are written) and (b) ~400 generated texts: English lines, other scripts, emoji,
// digits, punctuation, runs of spaces, tabs and newlines, and random strings that stress the merge
// order.  Everything is deterministic: same package, same file.
'use strict';
const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');

const outDir = process.argv[2] || 'build/ref';
const extraFiles = process.argv.slice(3);
const pkgDir = process.env.LOQT_TOKENIZER_PKG || 'data/npm/llama-tokenizer-js';

function fail(msg) {
  console.error('gen_tokenizer_cases: error: ' + msg);
  process.exit(1);
}

// ---------------------------------------------------------------- texts

const LINES = [
  'The quick brown fox jumps over the lazy dog.',
  'It was the best of times, it was the worst of times.',
  'Call me Ishmael.',
  'In the beginning God created the heaven and the earth.',
  'To be, or not to be: that is the question.',
  'All happy families are alike; each unhappy family is unhappy in its own way.',
  'The llama (Lama glama) is a domesticated South American camelid.',
  'Llamas are social animals and live with others as a herd.',
  'A language model assigns probabilities to sequences of tokens.',
  'Quantization reduces the memory needed to store the weights of a network.',
  'Low-rank adapters add a small number of trainable parameters to each layer.',
  'The gradient is projected onto a low-dimensional subspace before the optimizer step.',
  'She sells seashells by the seashore.',
  'Peter Piper picked a peck of pickled peppers.',
  'How much wood would a woodchuck chuck if a woodchuck could chuck wood?',
  'Colorless green ideas sleep furiously.',
  'The rain in Spain stays mainly in the plain.',
  'I think, therefore I am.',
  'The only thing we have to fear is fear itself.',
  'Ask not what your country can do for you; ask what you can do for your country.',
  'Four score and seven years ago our fathers brought forth on this continent a new nation.',
  'That\'s one small step for a man, one giant leap for mankind.',
  'We hold these truths to be self-evident, that all men are created equal.',
  'The mitochondria is the powerhouse of the cell.',
  'Photosynthesis converts light energy into chemical energy.',
  'Water boils at 100 degrees Celsius at sea level.',
  'The speed of light is about 299,792,458 metres per second.',
  'Pi is approximately 3.14159265358979.',
  'On 12/31/1999, people worried about the Y2K bug.',
  'The meeting is at 10:30 a.m. on Tuesday, March 5th, 2024.',
  'Call +1 (555) 123-4567 or e-mail info@example.com for details.',
  'Visit https://www.example.org/path?query=value&x=1#section for more.',
  'The price rose from $19.99 to $24.50 (a 22.6% increase).',
  'Temperatures ranged from -40°F to 120°F.',
  'He said, "I\'ll be back," and left.',
  'Wait... what?! Are you serious???',
  'Dr. Smith, Mr. Jones, and Mrs. Brown arrived at 5 p.m.',
  'The U.S.A. and the U.K. signed the treaty.',
  'Rock \'n\' roll isn\'t dead; it\'s just resting.',
  'e.g., i.e., etc., vs., cf., et al.',
  'The year 1066 saw the Norman conquest of England.',
  'Mount Everest is 8,848.86 metres tall.',
  'Her phone number ended in 0000, which she found amusing.',
  'Version 2.0.1-beta was released on 2023-07-18T14:22:05Z.',
  'for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }',
  'def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)',
  'SELECT name, COUNT(*) FROM users WHERE age > 21 GROUP BY name;',
  '{"name": "llama", "legs": 4, "tags": ["wool", "andes"], "ok": true}',
  '<html><body><p class="x">Hello &amp; welcome!</p></body></html>',
  'x = [1, 2, 3]; y = {k: v for k, v in zip("abc", x)}',
  '#include <stdio.h>\nint main(void) { printf("hi\\n"); return 0; }',
  'git commit -m "Fix off-by-one error in the tokenizer"',
  'The café served crème brûlée and a piña colada.',
  'Naïve résumé: façade, coöperate, über, jalapeño.',
  'Zürich, München, Köln and Düsseldorf are German-speaking cities.',
  'Ærøskøbing is a town in Denmark; Øresund is a strait.',
  'Ça va? Très bien, merci. À bientôt!',
  '¿Dónde está la biblioteca? ¡Está allí!',
  'Москва — столица России.',
  'Привет, как дела? Всё хорошо.',
  'Η γλώσσα είναι ελληνική.',
  'Ἐν ἀρχῇ ἦν ὁ λόγος.',
  '東京は日本の首都です。',
  '我爱自然语言处理。',
  '镇上有一家很小的书店。',
  '한국어는 한글로 씁니다.',
  'مرحبا بالعالم',
  'שלום עולם',
  'नमस्ते दुनिया',
  'สวัสดีชาวโลก',
  'Tiếng Việt có nhiều dấu thanh.',
  'Zażółć gęślą jaźń.',
  'Příliš žluťoučký kůň úpěl ďábelské ódy.',
  'Iñtërnâtiônàlizætiøn',
  'I love pizza 🍕 and tacos 🌮!',
  'Family: 👨‍👩‍👧‍👦, flags: 🇫🇷 🇯🇵 🇺🇸, skin tones: 👍🏽 👋🏿',
  'The llama emoji is 🦙 and the camel is 🐫.',
  'Math: ∑ᵢ xᵢ² ≤ ∞, ∀ε>0 ∃δ>0, √2 ≈ 1.414, π ≠ 3.',
  'Arrows → ← ↑ ↓ ⇒ and boxes ┌─┐ │ └─┘',
  'Currency: € £ ¥ ₹ ₩ ₿ ¢',
  '©2024 Example Corp™. All rights reserved®.',
  'Quotes: “curly” ‘single’ «guillemets» „German“',
  'Dashes: en – em — minus − hyphen ‐',
  'Ellipsis… bullet • middle dot · section § pilcrow ¶',
  'Ligatures: ﬁ ﬂ ﬀ; full width: ＡＢＣ１２３',
  'Combining: e\u0301 a\u0308 n\u0303 vs precomposed é ä ñ',
  'Zero\u200bwidth\u200bspace and non\u00a0breaking\u00a0space',
  'Soft\u00adhyphen and BOM \ufeff inside',
  'The replacement character \ufffd appears when decoding fails.',
  'Ꙋ is a rare Cyrillic letter, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 is math fraktur.',
  'Ancient: 𓀀 𓁐 (hieroglyphs), 𐌰𐌱𐌲 (Gothic), 𒀭 (cuneiform).',
  'supercalifragilisticexpialidocious',
  'pneumonoultramicroscopicsilicovolcanoconiosis',
  'Antidisestablishmentarianism is a long word.',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'abababababababababababababababab',
  'the the the the the the the the',
  '0123456789 9876543210 1111111111 1234567890',
  '3.14 2.71 1.41 1.73 0.577 6.022e23 1e-9',
  'HTTP 404 Not Found; HTTP 500 Internal Server Error',
  'ALL CAPS SENTENCE WITH SOME WORDS IN IT.',
  'camelCaseIdentifier and snake_case_identifier and kebab-case-identifier',
  'TODO: fix this!!! FIXME?? XXX...',
  '--- *** ___ === +++ ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]]',
  '\'single\' "double" `backtick` ~tilde~ |pipe| \\backslash\\',
  'Tabs\tbetween\twords\tand\ttrailing\t',
  '    indented with four spaces',
  'trailing spaces    ',
  'multiple   spaces   between   words',
  '\n',
  ' \n',
  '\n\n\n',
  'line one\nline two\nline three',
  'windows\r\nline\r\nendings',
  'a\n\nb\n\n\nc',
  ' ',
  '  ',
  '           ',
  '                                        ',
  '\t',
  '\u0000',
  'nul\u0000inside',
  'control \u0001\u0002\u0007\u001b[0m chars',
  'DEL \u007f and C1 \u0085 chars',
  'x',
  'I',
  '.',
  '!',
  '1',
  '12',
  '123',
  '▁',
  '▁▁ two blocks',
  '<s>',
  '</s>',
  '<unk>',
  '<0x0A>',
  'ax\n####\nboo',
];

// A small deterministic PRNG (mulberry32), so the file does not change between runs.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20240601);
const pick = (arr) => arr[Math.floor(rand() * arr.length)];

function generatedTexts(extraLines) {
  const texts = [...LINES];
  const prose = LINES.filter((s) => /^[A-Z]/.test(s) && s.length > 20);
  // paragraphs: lines joined by assorted separators
  const seps = ['\n', '\n\n', ' \n', '\n ', '  ', ' ', '\t', '\r\n'];
  for (let i = 0; i < 40; i++) {
    let s = pick(prose);
    const k = 1 + Math.floor(rand() * 4);
    for (let j = 0; j < k; j++) s += pick(seps) + pick(LINES);
    texts.push(s);
  }
  // edits of single lines
  const edits = [
    (s) => s.toUpperCase(),
    (s) => s.toLowerCase(),
    (s) => s.replace(/ /g, '  '),
    (s) => s.replace(/ /g, '   '),
    (s) => ' ' + s,
    (s) => '   ' + s + '   ',
    (s) => s + '\n',
    (s) => Array.from(s).slice(0, 1 + Math.floor(rand() * Array.from(s).length)).join(''),
    (s) => Array.from(s).slice(Math.floor(rand() * Array.from(s).length)).join(''),
    (s) => s.split(' ').reverse().join(' '),
    (s) => s.replace(/[aeiou]/g, (c) => c + c),
    (s) => s.replace(/ /g, '\n'),
  ];
  for (let i = 0; i < 80; i++) texts.push(pick(edits)(pick(LINES)));
  // random strings over small alphabets: many equal-priority merges, byte fallback, and runs of
  // 3-byte fallback characters that push the JS priority fraction (origPos / length) above 1
  const alphabets = [
    ['a', 'b', ' '],
    ['e', 'r', 't', 'h', ' ', '\n'],
    [' ', ' ', ' ', 'x'],
    ['#', '\n', 'a', 'x', 'b', 'o'],
    ['Ꙋ', 'ab', ' ', 'in', 'g', 'the'],
    ['🦙', '镇', ' ', 'er', 'ing', '\t'],
    ['Ꙋ', 'Ꙋ', 'Ꙋ', ' the', ' and', 'ation', 'ly'],
    ['0', '1', '9', '.', ',', ' '],
    ['Ä', 'ß', 'é', ' ', 'ch', 'en'],
    ['\u0000', '\u00ff', '\u07ff', '\u0800', '\uffff', '\u{10000}', '\u{10ffff}', 'a'],
  ];
  for (let i = 0; i < 120; i++) {
    const alpha = alphabets[i % alphabets.length];
    const n = 1 + Math.floor(rand() * (i < 60 ? 12 : 60));
    let s = '';
    for (let j = 0; j < n; j++) s += pick(alpha);
    texts.push(s);
  }
  // long rare-character prefixes in front of English, and numbers of many shapes
  for (let i = 0; i < 8; i++) texts.push('Ꙋ'.repeat(5 + 20 * i) + ' ' + pick(prose));
  for (let i = 0; i < 8; i++) texts.push(pick(prose) + ' ' + '🦙'.repeat(3 + 10 * i));
  for (let i = 0; i < 20; i++) {
    const x = Math.floor(rand() * 1e9);
    texts.push([String(x), x.toLocaleString('en-US'), (x / 997).toFixed(4), '0x' + x.toString(16)].join(' '));
  }
  texts.push(...extraLines);
  // one long text: every line above, newline-joined (exercises a large promptLength)
  texts.push(LINES.join('\n'));
  return texts;
}

function readExtraLines(files) {
  const out = [];
  for (const f of files) {
    let lines;
    try {
      lines = fs.readFileSync(f, 'utf8').split('\n').filter((l) => l.trim().length > 0);
    } catch (e) {
      fail('cannot read ' + f + ': ' + e.message);
    }
    const want = Math.min(200, lines.length);
    for (let i = 0; i < want; i++) out.push(lines[Math.floor((i * lines.length) / want)]);
  }
  return out;
}

// ---------------------------------------------------------------- golden cases

// The package's tests live in LlamaTokenizer.defaultTests (test-llama-tokenizer.js only calls
// runTests).  Re-create that function with a recorder at the start of its two helpers; it still
// runs its own checks, so a golden case that the package itself fails stops us here.
function goldenCases(tok) {
  let src = tok.defaultTests.toString();
  const enc = 'function testCase(inputString, expectedTokenIds) {';
  const dec = 'function testDecodeOnly(inputTokenIds, expectedOutputString, add_bos_token=true, add_preceding_space=true) {';
  if (!src.startsWith('defaultTests(') || !src.includes(enc) || !src.includes(dec))
    fail('the package test code does not have the expected shape');
  src = src
    .replace(enc, enc + ' __rec.enc(inputString, expectedTokenIds);')
    .replace(dec, dec + ' __rec.dec(inputTokenIds, expectedOutputString, add_bos_token, add_preceding_space);');
  const cases = { enc: [], dec: [] };
  const rec = {
    enc: (text, ids) => cases.enc.push([text, ids.slice()]),
    dec: (ids, text, bos, space) => cases.dec.push([ids.slice(), text, bos, space]),
  };
  const fn = new Function('__rec', 'return function ' + src.slice('defaultTests'.length) + ';')(rec);
  const log = console.log;
  console.log = () => {}; // the package logs a timing line per case
  try {
    fn(tok);
  } catch (e) {
    console.log = log;
    fail('the package fails its own tests: ' + e.message);
  }
  console.log = log;
  return cases;
}

// ---------------------------------------------------------------- main

const hex = (s) => (s.length ? Buffer.from(s, 'utf8').toString('hex') : '-');

(async () => {
  const jsPath = path.resolve(pkgDir, 'llama-tokenizer.js');
  if (!fs.existsSync(jsPath))
    fail(jsPath + ' is missing; run: bash scripts/fetch_tokenizer.sh data');
  const tok = (await import(pathToFileURL(jsPath).href)).default;
  if (!tok || typeof tok.encode !== 'function') fail(jsPath + ' does not export a tokenizer');

  const gold = goldenCases(tok);
  const lines = ['# llama-tokenizer-js reference cases; see tests/gen_tokenizer_cases.js'];
  for (const [text, ids] of gold.enc) lines.push(`E 1 ${hex(text)} : ${ids.join(' ')}`);
  for (const [ids, text, bos, space] of gold.dec)
    if (bos && space) lines.push(`D ${hex(text)} : ${ids.join(' ')}`); // the variant loqt decodes
  let n = gold.enc.length;
  for (const [i, text] of generatedTexts(readExtraLines(extraFiles)).entries()) {
    // lone surrogates cannot be written as UTF-8; none are generated, but lines read from files
    // are checked too
    if (Buffer.from(text, 'utf8').toString('utf8') !== text) continue;
    const bos = i % 7 === 3 ? 0 : 1; // some without BOS: origPos then starts at the space
    lines.push(`E ${bos} ${hex(text)} : ${tok.encode(text, !!bos, true, false).join(' ')}`);
    n++;
  }
  fs.mkdirSync(outDir, { recursive: true });
  const out = path.join(outDir, 'tokenizer_cases.txt');
  fs.writeFileSync(out, lines.join('\n') + '\n');
  console.log(`gen_tokenizer_cases: wrote ${out}: ${n} encode cases (${gold.enc.length} golden), ` +
              `${lines.length - 1 - n} decode cases`);
})().catch((e) => fail(e.stack || String(e)));
