import fs from 'node:fs'; import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers'; import { Template } from '@huggingface/jinja';
const data = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
for (const [d, x] of Object.entries(data)) {
  const info = x.info;
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(d, info.file), 'utf8')), { eos_token: info.eos_token, clean_up_tokenization_spaces: false });
  const tpl = info.chat_template ? fs.readFileSync(path.join(d, info.chat_template), 'utf8') : null;
  let bad = 0, n = 0;
  const eq = (a, b, what) => { n++; if (JSON.stringify(a) !== JSON.stringify(b)) { bad++; if (bad < 8) console.log('MISMATCH', what, JSON.stringify(a).slice(0,200), '| py', JSON.stringify(b).slice(0,200)); } };
  for (const [t, a, b] of x.enc) { eq(tok.encode(t, {add_special_tokens: true}).ids, a, 'enc+ ' + t); eq(tok.encode(t, {add_special_tokens: false}).ids, b, 'enc- ' + t); }
  for (const [t, r, ids] of x.chat) { if (!tpl) continue; const mine = new Template(tpl).render({messages: [{role:'user', content: t}], add_generation_prompt: true, bos_token: info.bos_token||'', eos_token: info.eos_token||''});
    eq(mine, r, 'render ' + t); eq(tok.encode(mine, {add_special_tokens: false}).ids, ids, 'chat ' + t); }
  for (const [ids, a, b] of x.dec) { eq(tok.decode(ids, {skip_special_tokens: true, clean_up_tokenization_spaces: false}), a, 'dec+ ' + ids); eq(tok.decode(ids, {skip_special_tokens: false, clean_up_tokenization_spaces: false}), b, 'dec- ' + ids); }
  console.log(d, `${n - bad}/${n} equal`);
}
