// Dev check: the chat page of `gpt serve` (GET /) in a real browser (the system's Chromium,
// driven by playwright-core; no browser is downloaded).
//
//   node tools/serve_chat_page_check.mjs URL SCREENSHOT.png [--chromium /usr/bin/chromium]
//
// against a running server (tools/serve_chat_page_check.sh starts one). Steps:
//   1. the page loads, names the model (from /v1/models) and logs no script error;
//   2. the page lowers its "max tokens" to half the context it reads from /v1/models; a message
//      sent with "max tokens" 128 on a model whose context is 128 tokens is refused by the server: the bubble turns into an error naming the context
//      (the page's error path), and the failed turn is dropped from the conversation;
//   3. with "max tokens" 48 and temperature 0, a message typed and sent with Enter gets an
//      assistant bubble that ends `data-state="done"` with text, and that text arrived in
//      pieces: the bubble is seen with at least two different lengths, set after different
//      network reads, and the response held more than one SSE content chunk;
//   4. a second message (the send button this time) sends the whole conversation: the request
//      carries both user turns and the first answer;
//   5. a screenshot goes to SCREENSHOT.png.
// One PASS/FAIL line per step; the exit status is 1 if any failed.

import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const executablePath = flag("--chromium", process.env.CHROMIUM || "/usr/bin/chromium");
const timeoutMs = Number(flag("--timeout-ms", "60000"));
const [url, shot] = args;
if (!url || !shot) {
  console.error("usage: node tools/serve_chat_page_check.mjs URL SCREENSHOT.png [--chromium PATH]");
  process.exit(2);
}

let failures = 0;
function report(ok, name, detail) {
  console.log(`${ok ? "PASS" : "FAIL"}  ${name}${detail ? `  (${detail})` : ""}`);
  if (!ok) failures++;
}

// Instruments the page before its script runs, without changing what it does: every
// assistant bubble's text as it is set (its length, and how many network reads the page's
// stream reader had returned by then), and every chunk that reader returns.
function instrument() {
  window.__texts = [];
  window.__reads = [];
  const read = ReadableStreamDefaultReader.prototype.read;
  ReadableStreamDefaultReader.prototype.read = async function () {
    const r = await read.call(this);
    if (!r.done) window.__reads.push({ t: performance.now(), bytes: r.value.length });
    return r;
  };
  new MutationObserver(records => {
    for (const rec of records) {
      const el = rec.target.nodeType === 1 ? rec.target : rec.target.parentElement;
      if (!el || !el.classList.contains("assistant")) continue;
      for (const n of rec.addedNodes) {
        if (n.nodeType === 3) {
          window.__texts.push({ bubble: [...document.querySelectorAll(".msg")].indexOf(el),
            len: n.data.length, read: window.__reads.length });
        }
      }
    }
  }).observe(document, { childList: true, subtree: true, characterData: true });
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  page.setDefaultTimeout(timeoutMs);
  const pageErrors = [];
  page.on("pageerror", e => pageErrors.push(String(e)));
  // Console errors, except the browser's "Failed to load resource" lines: those are checked
  // by status below (the refused request of step 2 is expected, and the page has no icon).
  page.on("console", m => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
  });
  const failed = [];
  page.on("response", r => { if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`); });
  // Bodies of the chat requests and of their (SSE) responses, in order.
  const chats = [];
  page.on("response", async resp => {
    if (!resp.url().endsWith("/v1/chat/completions")) return;
    const entry = { request: resp.request().postDataJSON(), status: resp.status() };
    chats.push(entry);
    try { entry.body = (await resp.body()).toString("utf8"); } catch (e) { entry.body = ""; }
  });
  await page.addInitScript(instrument);

  // 1. Load.
  const resp = await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("model").textContent !== "…");
  const model = await page.textContent("#model");
  report(resp.status() === 200 && model.length > 0, "page loads and names the model", `model ${JSON.stringify(model)}`);

  const settled = async i => {
    const b = page.locator("#log > .msg").nth(i);
    await page.waitForFunction(
      el => el && el.dataset.state && el.dataset.state !== "streaming",
      await b.elementHandle());
    return { state: await b.getAttribute("data-state"), text: await b.textContent(), cls: await b.getAttribute("class") };
  };

  // 2. The page sizes "max tokens" from /v1/models' max_model_len (half the context); 128 on a
  // 128-token context is refused, shown as an error.
  const sized = await page.inputValue("#max");
  report(sized === "64", "the page sizes max tokens from the context", `max tokens ${sized}`);
  await page.fill("#max", "128");
  await page.fill("#input", "Hello!");
  await page.press("#input", "Enter");
  const err = await settled(1);
  report(err.state === "error" && err.cls.includes("error") && /context length/.test(err.text),
    "an API error shows in the bubble", JSON.stringify(err.text.slice(0, 90)));

  // 3. A streamed answer.
  await page.fill("#max", "48");
  await page.fill("#temp", "0");
  const before = chats.length;
  await page.fill("#input", "Tell me a story about a fox.");
  await page.press("#input", "Enter");
  const first = await settled(3);
  await new Promise(r => setTimeout(r, 200)); // the response listener reads the body
  const texts = (await page.evaluate(() => window.__texts)).filter(x => x.bubble === 3);
  const reads = await page.evaluate(() => window.__reads);
  const lengths = [...new Set(texts.map(x => x.len).filter(n => n > 0))];
  const readsSeen = new Set(texts.filter(x => x.len > 0).map(x => x.read));
  const chat = chats[before] || { body: "" };
  const sse = chat.body.split("\n\n").filter(e => e.startsWith("data: ") && e !== "data: [DONE]")
    .map(e => JSON.parse(e.slice(6)));
  const contentChunks = sse.filter(j => (j.choices || []).some(c => c.delta && c.delta.content)).length;
  const sseText = sse.map(j => (j.choices || []).map(c => (c.delta && c.delta.content) || "").join("")).join("");
  report(first.state === "done" && first.text.length > 0 && first.text === sseText,
    "Enter sends; the answer ends data-state=done with the streamed text",
    `${first.text.length} chars: ${JSON.stringify(first.text.slice(0, 60))}`);
  report(lengths.length >= 2 && readsSeen.size >= 2 && contentChunks > 1,
    "the answer arrived in pieces",
    `text seen at ${lengths.length} lengths after ${readsSeen.size} different network reads ` +
    `(${reads.length} reads in all), ${contentChunks} SSE content chunks`);
  report(chat.request && chat.request.stream === true && chat.request.max_completion_tokens === 48 &&
    chat.request.temperature === 0 && chat.request.messages.length === 1,
    "the request: stream, the page's settings, the failed turn dropped",
    chat.request ? `${chat.request.messages.length} message(s)` : "no request seen");

  // 4. A second turn sends the conversation.
  await page.fill("#input", "And then?");
  await page.click("#send");
  const second = await settled(5);
  await new Promise(r => setTimeout(r, 200));
  const msgs = (chats[chats.length - 1].request || {}).messages || [];
  report(second.state === "done" && msgs.length === 3 && msgs[1].role === "assistant" &&
    msgs[1].content === first.text && msgs[2].content === "And then?",
    "a second turn carries the conversation", `${msgs.length} messages, answer ${second.text.length} chars`);

  report(pageErrors.length === 0, "no script errors", pageErrors.join(" | ").slice(0, 200));
  const unexpected = failed.filter(f => f !== "400 /v1/chat/completions" && f !== "404 /favicon.ico");
  report(unexpected.length === 0 && failed.filter(f => f.startsWith("400")).length === 1,
    "no failed request but the refused one", failed.join(", "));
  await page.screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);
} catch (e) {
  report(false, "the browser run", String(e));
} finally {
  await browser.close();
}
console.log(failures ? `${failures} step(s) failed` : "all steps passed");
process.exit(failures ? 1 : 0);
