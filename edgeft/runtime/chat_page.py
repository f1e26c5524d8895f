"""The page at `/`: a chat with the served model that streams its answers, with a picker of the model
and its adapters, and a field for the API key when the server needs one. One HTML file, no external
assets: it works on a device with no network."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{NAME}}: edgeft</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:46rem;padding:1rem;color:#202124}
header{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}h1{font-size:1.2rem;margin:0 auto 0 0}
select,input,textarea,button{font:inherit;padding:.35rem .5rem;border:1px solid #bbb;border-radius:6px}
#log{margin:1rem 0;display:flex;flex-direction:column;gap:.6rem}
.msg{padding:.5rem .75rem;border-radius:8px;white-space:pre-wrap}.user{background:#e8f0fe;align-self:flex-end}
.assistant{background:#f1f3f4}.error{background:#fce8e6}form{display:flex;gap:.5rem}textarea{flex:1;min-height:2.6rem}
</style></head>
<body><header><h1>{{NAME}}</h1><label>model <select id="model"></select></label>
<input id="key" type="password" placeholder="API key (if needed)" size="16"></header>
<div id="log"></div>
<form id="ask"><textarea id="text" placeholder="Ask something" required></textarea><button>Send</button></form>
<script>
const log = document.getElementById("log"), key = document.getElementById("key"), pick = document.getElementById("model");
key.value = localStorage.getItem("edgeft-key") || "";
key.onchange = () => localStorage.setItem("edgeft-key", key.value);
let history = [];
function headers() {
  const h = {"Content-Type": "application/json"};
  if (key.value) h["Authorization"] = "Bearer " + key.value;
  return h;
}
function add(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role; div.textContent = text; log.appendChild(div); return div;
}
async function models() {
  const r = await fetch("/v1/models", {headers: headers()});
  if (!r.ok) { add("error", "cannot list the models: " + r.status); return; }
  pick.innerHTML = "";
  for (const m of (await r.json()).data) pick.add(new Option(m.id, m.id));
  pick.onchange = () => { history = []; log.innerHTML = ""; };
}
document.getElementById("ask").onsubmit = async (event) => {
  event.preventDefault();
  const box = document.getElementById("text"), text = box.value.trim();
  if (!text) return;
  box.value = ""; add("user", text); history.push({role: "user", content: text});
  const out = add("assistant", "");
  log.dataset.busy = "1";
  const r = await fetch("/v1/chat/completions", {method: "POST", headers: headers(),
    body: JSON.stringify({model: pick.value, messages: history, stream: true, temperature: 0})});
  if (!r.ok) {
    out.className = "msg error"; out.textContent = (await r.json()).error.message; history.pop();
    delete log.dataset.busy; return;
  }
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    const events = buffer.split("\\n\\n"); buffer = events.pop();
    for (const e of events) {
      const data = e.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const delta = JSON.parse(data).choices?.[0]?.delta;
      if (delta && delta.content) out.textContent += delta.content;
    }
  }
  history.push({role: "assistant", content: out.textContent});
  delete log.dataset.busy;
};
key.addEventListener("change", models);
models();
</script></body></html>
"""
