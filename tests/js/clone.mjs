// Clone a novel the way a browser editor would: isomorphic-git over smart HTTP, the token
// given through onAuth as a Basic password. Prints {"head", "files": {path: text}} as JSON.
//
//   node tests/js/clone.mjs <url> <token> <dir>
import fs from "node:fs";
import path from "node:path";
import git from "isomorphic-git";
import http from "isomorphic-git/http/node";

const [url, token, dir] = process.argv.slice(2);
if (!url || !dir) {
  console.error("usage: node clone.mjs <url> <token> <dir>");
  process.exit(2);
}

let asked = 0;
await git.clone({
  fs,
  http,
  dir,
  url,
  singleBranch: true,
  onAuth: () => {
    asked += 1;
    return { username: "openwrite", password: token };
  },
  // A refused token must fail the clone, not loop asking again.
  onAuthFailure: () => ({ cancel: true }),
});

function walk(folder, found = {}) {
  for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
    if (entry.name === ".git") continue;
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) walk(full, found);
    else found[path.relative(dir, full).split(path.sep).join("/")] = fs.readFileSync(full, "utf8");
  }
  return found;
}

const head = await git.resolveRef({ fs, dir, ref: "HEAD" });
const branch = await git.currentBranch({ fs, dir });
console.log(JSON.stringify({ head, branch, asked, files: walk(dir) }));
