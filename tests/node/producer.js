// The seed server's producer, reduced to its queue call: build the job as the
// seed documents it and push it exactly as the seed does.
const { createClient } = require('redis');

async function main() {
  const [url, jobJson] = process.argv.slice(2);
  const redisClient = createClient({ url });
  redisClient.on('error', (err) => console.error('Redis error', err));
  await redisClient.connect();
  const job = JSON.parse(jobJson);
  await redisClient.rPush('image:jobs', JSON.stringify(job));
  await redisClient.quit();
}

main().catch((err) => { console.error(err); process.exit(1); });
