// Reads every record of a topic from its start, through Apache Kafka's own
// Java consumer (no group: every partition assigned), until COUNT records
// were read or TIMEOUT_MS passed. Java 17 runs this single source file as is:
//
//   java -cp '<kafka.sh classpath>/*' tests/kafka/ConsumeRaw.java \
//     BOOTSTRAP TOPIC COUNT TIMEOUT_MS
//
// Prints one JSON object per record and line: partition, offset, key,
// value (UTF-8) and headers (name to UTF-8 value). Exits 0 with what it
// read, even if fewer than COUNT (the caller asserts).

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class ConsumeRaw {
  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: ConsumeRaw BOOTSTRAP TOPIC COUNT TIMEOUT_MS");
      System.exit(2);
    }
    String topic = args[1];
    int count = Integer.parseInt(args[2]);
    long deadline = System.currentTimeMillis() + Long.parseLong(args[3]);
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      // A topic just created may not be in the metadata yet: partitionsFor
      // then answers an empty list. Ask again, until the deadline.
      List<PartitionInfo> infos = List.of();
      while (infos.isEmpty() && System.currentTimeMillis() < deadline) {
        infos = consumer.partitionsFor(topic, Duration.ofMillis(Math.max(1, deadline - System.currentTimeMillis())));
        if (infos.isEmpty()) Thread.sleep(100);
      }
      if (infos.isEmpty()) {
        System.err.println("topic " + topic + " has no partitions before the deadline");
        System.exit(1);
      }
      List<TopicPartition> partitions = new ArrayList<>();
      for (PartitionInfo info : infos) partitions.add(new TopicPartition(topic, info.partition()));
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      int read = 0;
      while (read < count && System.currentTimeMillis() < deadline) {
        for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(200))) {
          StringBuilder line = new StringBuilder();
          line.append("{\"partition\":").append(record.partition())
              .append(",\"offset\":").append(record.offset())
              .append(",\"key\":").append(quote(record.key()))
              .append(",\"value\":").append(quote(record.value()))
              .append(",\"headers\":{");
          boolean first = true;
          for (Header header : record.headers()) {
            if (!first) line.append(',');
            first = false;
            line.append(quote(header.key().getBytes(StandardCharsets.UTF_8))).append(':').append(quote(header.value()));
          }
          line.append("}}");
          System.out.println(line);
          read++;
        }
      }
    }
  }

  private static String quote(byte[] bytes) {
    if (bytes == null) return "null";
    String text = new String(bytes, StandardCharsets.UTF_8);
    StringBuilder out = new StringBuilder("\"");
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c == '"' || c == '\\') out.append('\\').append(c);
      else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
      else out.append(c);
    }
    return out.append('"').toString();
  }
}
