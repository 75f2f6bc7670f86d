import { InProcessBroker, InProcessTransport } from '../../src/transport/in-process.js';
import { transportContract } from './contract.js';

transportContract('in-process', () => {
  const broker = new InProcessBroker();
  return {
    knowsNoResponders: true,
    async make() {
      const t = new InProcessTransport({ broker });
      await t.connect();
      return t;
    },
    // The broker's own delivery path, with bytes no codec made.
    raw: async (topic, bytes) => {
      await Promise.resolve();
      for (const entry of broker.route(topic.split('/'), false)) void entry.deliver(bytes, topic);
    },
  };
});
