// Writes raw records (not Weft envelopes) with one key into one partition,
// through Apache Kafka's own Java producer: what another application sharing
// a topic with Weft might write. Java 17 runs this single source file as is:
//
//   java -cp '<kafka.sh classpath>/*' tests/kafka/ProduceRaw.java \
//     BOOTSTRAP TOPIC PARTITION KEY VALUE...
//
// The key and each value are written as their UTF-8 bytes, one record per
// value, in order; it exits 0 once the broker acknowledged every record
// (acks=all), non-zero with the reason otherwise.

import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ProduceRaw {
  public static void main(String[] args) throws Exception {
    if (args.length < 5) {
      System.err.println("usage: ProduceRaw BOOTSTRAP TOPIC PARTITION KEY VALUE...");
      System.exit(2);
    }
    String topic = args[1];
    int partition = Integer.parseInt(args[2]);
    byte[] key = args[3].getBytes(StandardCharsets.UTF_8);
    Properties props = new Properties();
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(ProducerConfig.ACKS_CONFIG, "all");
    props.put(ProducerConfig.LINGER_MS_CONFIG, "0");
    props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "15000");
    props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
    props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "15000");
    try (KafkaProducer<byte[], byte[]> producer =
        new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
      for (int i = 4; i < args.length; i++) {
        byte[] value = args[i].getBytes(StandardCharsets.UTF_8);
        // One at a time, so the records land in the order given.
        producer.send(new ProducerRecord<>(topic, partition, key, value)).get(20, TimeUnit.SECONDS);
      }
    }
  }
}
