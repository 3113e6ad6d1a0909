// PM2, as the seed deploys its worker:  pm2 start deploy/ecosystem.config.js
module.exports = {
  apps: [
    {
      name: 'image-processor',
      script: 'gpu-image-worker',
      interpreter: 'none',
      args: ['-redis', 'localhost:6379', '-db', '0', '-workers', '4', '-max-retries', '3',
             '--allowed-root', '/srv/uploads', '--metrics-port', '9108'],
      env: {
        REDIS_PASSWORD: '',
      },
      kill_timeout: 70000, // ms; the worker finishes jobs in hand for up to 60 s after SIGINT
      autorestart: true,
    },
  ],
};
